// <notification-bell>: the current user's inbox, live. An ES module with no
// dependencies; docs/client.rst describes its attributes and theme.
//
//   <notification-bell api="/inbox/" hub="Inbox"></notification-bell>
//
// Its count follows the "inbox.badge" events of `hub` through the shared
// connection of notifications.js, so it changes in every tab and on every
// device at once. Text is only ever set with textContent, never as HTML.

import { connect } from "./notifications.js";

const STYLE = `
:host { display: inline-block; position: relative; font: var(--notification-bell-font, inherit);
  color: var(--notification-bell-color, inherit); }
button { font: inherit; cursor: pointer; }
.toggle { display: inline-flex; align-items: center; gap: 0.4em; padding: 0.3em 0.7em; border-radius: 0.4em;
  border: 1px solid var(--notification-bell-border, currentColor); color: inherit;
  background: var(--notification-bell-background, transparent); }
.toggle:focus-visible, .panel button:focus-visible { outline: 2px solid var(--notification-bell-focus, #1d6fb8);
  outline-offset: 2px; }
.count { min-width: 1.2em; text-align: center; border-radius: 1em; padding: 0 0.4em;
  background: var(--notification-bell-count-background, #545b66); color: var(--notification-bell-count-color, #fff); }
.count.unread { background: var(--notification-bell-unread-background, #b3261e);
  color: var(--notification-bell-unread-color, #fff); }
.panel { position: absolute; right: 0; top: calc(100% + 0.4em); z-index: 10;
  width: var(--notification-bell-width, min(22rem, 90vw)); box-sizing: border-box; padding: 0.6em;
  border-radius: 0.4em; background: var(--notification-bell-panel-background, #fff);
  color: var(--notification-bell-panel-color, #1d2433); box-shadow: 0 4px 12px rgba(0, 0, 0, 0.25); }
.panel.start { right: auto; left: 0; }
.panel[hidden] { display: none; }
.head { display: flex; justify-content: space-between; align-items: center; gap: 0.5em; margin-bottom: 0.4em; }
.head h2 { font-size: 1em; margin: 0; }
ul { list-style: none; margin: 0; padding: 0; max-height: var(--notification-bell-list-height, 20rem); overflow: auto; }
li { display: flex; gap: 0.5em; align-items: flex-start; justify-content: space-between; padding: 0.35em 0.2em;
  border-bottom: 1px solid var(--notification-bell-separator, #d5d8dd); }
li .text { min-width: 0; overflow-wrap: anywhere; }
li .title { display: block; }
li.unread .title { font-weight: 600; }
li .body { display: block; font-size: 0.85em; color: var(--notification-bell-muted, #4a5160); }
.empty, .error { margin: 0.3em 0; color: var(--notification-bell-muted, #4a5160); }
.error { color: var(--notification-bell-error, #b3261e); }
.panel button { padding: 0.15em 0.5em; border-radius: 0.3em; border: 1px solid var(--notification-bell-accent, #1d6fb8);
  background: var(--notification-bell-button-background, #fff); color: var(--notification-bell-accent, #1d6fb8); }
.more { margin-top: 0.4em; }
@media (max-width: 30rem) {
  .panel { position: fixed; top: auto; left: 0.5rem; right: 0.5rem; width: auto; }
}
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

let serial = 0;

const element = (tag, attributes = {}, text = null) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
};

export class NotificationBell extends HTMLElement {
  static observedAttributes = ["label"];

  constructor() {
    super();
    const id = "notification-bell-" + ++serial;
    const root = this.attachShadow({ mode: "open", delegatesFocus: false });
    root.append(element("style", {}, STYLE));
    this.toggle = element("button", { type: "button", class: "toggle", part: "button", "aria-expanded": "false",
      "aria-controls": id });
    this.toggleText = element("span", { class: "label" });
    this.countNode = element("span", { class: "count", part: "count" }, "0");
    // The accessible name is the visible text and a word: "Inbox 3 unread".
    this.toggle.append(this.toggleText, " ", this.countNode, element("span", { class: "sr" }, " unread"));
    this.status = element("span", { class: "sr", role: "status" });
    this.panel = element("div", { id, class: "panel", part: "panel", role: "region", hidden: "" });
    this.heading = element("h2", { id: id + "-title" });
    this.panel.setAttribute("aria-labelledby", this.heading.id);
    this.markAll = element("button", { type: "button", class: "mark-all" }, "Mark all read");
    const head = element("div", { class: "head" });
    head.append(this.heading, this.markAll);
    this.list = element("ul", { class: "items", part: "list", "aria-labelledby": this.heading.id });
    this.empty = element("p", { class: "empty" }, "No notifications.");
    this.error = element("p", { class: "error", role: "alert", hidden: "" });
    this.more = element("button", { type: "button", class: "more", hidden: "" }, "Show older");
    this.panel.append(head, this.list, this.empty, this.error, this.more);
    root.append(this.toggle, this.status, this.panel);

    this.unread = 0;
    this.cursor = null;
    this.changed = 0; // badges since the last fetch began
    this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
    this.markAll.addEventListener("click", () => this.call("read-all", {}));
    this.more.addEventListener("click", () => this.load(true));
    this.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.panel.hidden) {
        this.setOpen(false);
        this.toggle.focus();
      }
    });
  }

  get label() {
    return this.getAttribute("label") || "Notifications";
  }

  attributeChangedCallback() {
    this.showCount(this.unread);
  }

  connectedCallback() {
    this.showCount(0);
    this.countNode.dataset.state = "connecting";
    this.client?.close();
    this.client = connect({
      url: this.getAttribute("events") || undefined,
      scope: this.getAttribute("scope") || undefined,
      hubs: [this.getAttribute("hub") || "Inbox"],
    });
    this.client.on(this.getAttribute("hub") || "Inbox", "inbox.badge", (badge) => {
      this.changed++;
      this.showCount(badge.unread_count);
      if (!this.panel.hidden) this.load(false);
    });
    this.client.onstate((state) => {
      this.countNode.dataset.state = state;
      this.dataset.state = state;
      // What changed while the connection was down.
      if (state === "open") this.load(false);
    });
    this.load(false);
  }

  disconnectedCallback() {
    this.client?.close();
    this.client = null;
  }

  setOpen(open) {
    this.panel.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    if (!open) return;
    // Open towards the side with room: under a bell near the left edge, it
    // opens to the right.
    this.panel.classList.remove("start");
    if (this.panel.getBoundingClientRect().left < 0) this.panel.classList.add("start");
    this.load(false);
  }

  showCount(unread) {
    this.unread = Number(unread) || 0;
    this.countNode.textContent = String(this.unread);
    this.countNode.classList.toggle("unread", this.unread > 0);
    this.toggleText.textContent = this.label;
    this.heading.textContent = this.label;
    const spoken = this.label + ": " + this.unread + " unread";
    if (this.status.textContent !== spoken && this.isConnected && this.loaded) this.status.textContent = spoken;
    this.dataset.unread = String(this.unread);
  }

  api(path) {
    return new URL(path, new URL(this.getAttribute("api") || "/inbox/", location.href));
  }

  async call(path, body) {
    // JSON bodies: the inbox refuses anything else, as a cross-site form would send.
    const options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    try {
      const response = await fetch(this.api(path), { credentials: "same-origin", ...options });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || response.status + " " + response.statusText);
      this.error.hidden = true;
      if (body !== undefined) {
        if (typeof answer.unread_count === "number") this.showCount(answer.unread_count);
        this.load(false);
      }
      return answer;
    } catch (error) {
      this.error.textContent = "The inbox cannot be reached: " + error.message;
      this.error.hidden = false;
      return null;
    }
  }

  async load(older) {
    const changed = this.changed;
    const query = "./?limit=" + (Number(this.getAttribute("page-size")) || 10)
      + (older && this.cursor ? "&before=" + encodeURIComponent(this.cursor) : "");
    const page = await this.call(query);
    if (!page) return;
    // A badge that came while this page was read is newer than its count.
    if (changed === this.changed) this.showCount(page.unread_count);
    this.loaded = true;
    if (!older) this.list.replaceChildren();
    for (const item of page.items) this.list.append(this.item(item));
    this.cursor = page.next_cursor;
    this.more.hidden = !page.next_cursor;
    this.empty.hidden = this.list.childElementCount > 0;
  }

  item(item) {
    const event = item.event || {};
    const entry = element("li", { class: item.read ? "read" : "unread", part: "item" });
    entry.dataset.id = String(item.id);
    const text = element("span", { class: "text" });
    text.append(element("span", { class: "title" }, String(event.title ?? "")),
      element("span", { class: "body" }, String(event.body ?? "")));
    entry.append(text);
    if (!item.read) {
      const read = element("button", { type: "button", class: "read" }, "Mark read");
      read.setAttribute("aria-label", "Mark read: " + String(event.title ?? ""));
      read.addEventListener("click", () => this.call("read", { ids: [item.id] }));
      entry.append(read);
    }
    return entry;
  }
}

if (!customElements.get("notification-bell")) customElements.define("notification-bell", NotificationBell);

// The bell: the viewer's inbox, its unread count kept live by the
// "inbox.badge" events of the viewer's own stream. Text is only ever set with
// textContent, never parsed as HTML.
"use strict";

(() => {
  const bell = document.getElementById("bell");
  const api = new URL(bell.dataset.api, location.href);
  const count = document.getElementById("bell-count");
  const button = document.getElementById("bell-button");
  const panel = document.getElementById("bell-panel");
  const list = document.getElementById("inbox-list");
  const empty = document.getElementById("inbox-empty");

  function showCount(unread) {
    count.textContent = String(unread);
    count.classList.toggle("unread", unread > 0);
  }

  async function call(path, body) {
    // JSON bodies: the inbox refuses anything else, as a cross-site form would send.
    const response = await fetch(new URL(path, api), {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    if (typeof answer.unread_count === "number") showCount(answer.unread_count);
    return answer;
  }

  async function refresh() {
    const page = await call("./?limit=10");
    list.replaceChildren();
    for (const item of page.items) {
      const entry = document.createElement("li");
      entry.className = item.read ? "read" : "unread";
      entry.dataset.id = String(item.id);
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = String(item.event.title);
      const body = document.createElement("span");
      body.className = "body";
      body.textContent = String(item.event.body);
      entry.append(title, body);
      entry.addEventListener("click", () => call("read", { ids: [item.id] }).then(refresh));
      list.appendChild(entry);
    }
    empty.hidden = page.items.length > 0;
  }

  button.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    button.setAttribute("aria-expanded", String(!panel.hidden));
  });
  document.getElementById("mark-all-read").addEventListener("click", () => call("read-all", {}).then(refresh));

  // Badges can arrive out of order (two changes published by two processes):
  // each carries its version, and only a newer one than the last shown counts.
  let badgeVersion = 0;
  const source = new EventSource(bell.dataset.events);
  source.addEventListener("inbox.badge", (message) => {
    const badge = JSON.parse(message.data);
    if (typeof badge.version === "number") {
      if (badge.version <= badgeVersion) return;
      badgeVersion = badge.version;
    }
    showCount(badge.unread_count);
    refresh();
  });
  source.onopen = () => {
    count.dataset.state = "open";
    refresh();  // what changed while disconnected
  };
  source.onerror = () => {
    count.dataset.state = "reconnecting";
  };
  refresh();
})();

// Follows every hub's SSE stream and lists the notifications as they arrive.
// Event text is only ever set with textContent, never parsed as HTML.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const tbody = document.getElementById("events");
const empty = document.getElementById("empty");
const seen = new Set();

function addRow(cells, classes) {
  const row = document.createElement("tr");
  row.className = classes;
  for (const [name, text, span] of cells) {
    const cell = document.createElement("td");
    cell.className = name;
    cell.textContent = text;
    if (span) cell.colSpan = span;
    row.appendChild(cell);
  }
  tbody.prepend(row);
  empty.hidden = true;
  return row;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function mark(text, kind) {
  addRow([["time", clock(new Date())], ["text", text, 4]], "marker " + kind);
}

function showEvent(stream, message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch (error) {
    return;
  }
  const key = stream.label + " " + event.event_id;
  if (seen.has(key)) return;  // replayed after a reconnect, already shown
  seen.add(key);
  const stamp = new Date(event.timestamp);
  const row = addRow(
    [
      ["time", isNaN(stamp) ? String(event.timestamp) : clock(stamp)],
      ["hub", stream.label],
      ["type", String(event.event_type)],
      ["title", String(event.title)],
      ["body", String(event.body)],
    ],
    "event new " + String(event.event_type).replace(/[^\w-]/g, ""),
  );
  row.dataset.eventId = String(event.event_id);
  row.dataset.sseId = message.lastEventId;
}

function setState(stream, state) {
  stream.badge.dataset.state = state;
  stream.badge.textContent = state === "open" ? "live" : state;
}

function connect(stream) {
  // The browser resends the last id it saw (Last-Event-ID) when it
  // reconnects by itself; a fresh EventSource carries it in the query.
  const url = new URL(stream.url, location.href);
  if (stream.lastId) url.searchParams.set("last_event_id", stream.lastId);
  const source = new EventSource(url);
  stream.source = source;

  const onEvent = (message) => {
    if (message.lastEventId) stream.lastId = message.lastEventId;
    showEvent(stream, message);
  };
  for (const type of config.eventTypes.concat(["message"])) source.addEventListener(type, onEvent);

  source.addEventListener("gap", () => {
    mark("Some " + stream.label + " notifications were missed while disconnected.", "gap");
  });
  // The server's backend (Redis) stopped answering, or answers again.
  source.addEventListener("backend-down", () => {
    setState(stream, "paused");
    mark("The " + stream.label + " server cannot reach its backend; waiting for it.", "lost");
  });
  source.addEventListener("backend-up", () => {
    setState(stream, "open");
    mark("The " + stream.label + " server reaches its backend again.", "reconnected");
  });
  source.onopen = () => {
    if (stream.lost) {
      mark("Reconnected to " + stream.label + (stream.lastId ? " (resuming after " + stream.lastId + ")" : ""),
           "reconnected");
    }
    stream.lost = false;
    setState(stream, "open");
  };
  source.onerror = () => {
    if (!stream.lost && stream.badge.dataset.state === "open") {
      stream.lost = true;
      mark("Connection to " + stream.label + " lost; reconnecting…", "lost");
    }
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a non-200 answer): try again ourselves.
      setState(stream, "closed");
      setTimeout(() => connect(stream), 3000);
    } else {
      setState(stream, "reconnecting");
    }
  };
}

for (const item of document.querySelectorAll("#streams .stream")) {
  connect({ label: item.dataset.label, url: item.dataset.url, badge: item.querySelector(".state"), lastId: "" });
}

for (const form of document.querySelectorAll("form")) {
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const result = form.querySelector(".result");
    result.classList.remove("error");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
      });
      // A proxy or a crashed server may answer HTML: say what happened
      // instead of failing to parse it.
      const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
      const answer = isJson ? await response.json() : {};
      if (!response.ok) throw new Error(answer.error || response.status + " " + response.statusText);
      if (!isJson) throw new Error("the server answered " + (response.headers.get("Content-Type") || "nothing"));
      result.textContent = answer.hubs.length
        ? "Sent to " + answer.hubs.join(" and ") + "."
        : "Sent, but no hub's filter matched it.";
    } catch (error) {
      result.classList.add("error");
      result.textContent = "Not sent: " + error.message;
    }
  });
}

// The page's glue: it lists the notifications that the shipped client
// (window.notifications, set by notifications_client_script()) delivers,
// and sends the forms. The client handles the protocol: one connection for
// every hub and tab, resuming, gaps, outages and duplicates.
// Event text is only ever set with textContent, never parsed as HTML.

const config = JSON.parse(document.getElementById("config").textContent);
const client = window.notifications;
const tbody = document.getElementById("events");
const empty = document.getElementById("empty");

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

function showEvent(event, info) {
  const stamp = new Date(event.timestamp);
  const row = addRow(
    [
      ["time", isNaN(stamp) ? String(event.timestamp) : clock(stamp)],
      ["hub", info.hub],
      ["type", String(event.event_type)],
      ["title", String(event.title)],
      ["body", String(event.body)],
    ],
    "event new " + String(event.event_type).replace(/[^\w-]/g, ""),
  );
  row.dataset.eventId = String(event.event_id);
  row.dataset.sseId = info.id;
}

client.on("*", "*", (data, info) => {
  if (info.hub !== null && !config.hubs.includes(info.hub)) return; // the bell's hub
  if (info.type === "gap") {
    mark("Some " + info.hub + " notifications were missed while disconnected.", "gap");
  } else if (info.type === "backend-down") {
    mark("The server cannot reach its backend; waiting for it.", "lost");
  } else if (info.type === "backend-up") {
    mark("The server reaches its backend again.", "reconnected");
  } else if (config.eventTypes.includes(info.type)) {
    showEvent(data, info);
  }
});

let lost = false;
let previous = "connecting";
client.onstate((state) => {
  for (const badge of document.querySelectorAll("#streams .state")) {
    badge.dataset.state = state;
    badge.textContent = state === "open" ? "live" : state;
  }
  if (state === "reconnecting" && previous === "open" && !lost) {
    lost = true;
    mark("Connection lost; reconnecting…", "lost");
  } else if (state === "open" && lost) {
    lost = false;
    mark("Reconnected.", "reconnected");
  }
  previous = state;
});

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

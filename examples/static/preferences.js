// The settings panel: the viewer's preferences from the preferences
// blueprint, one checkbox per hub and channel; a change is saved at once.
const panel = document.getElementById("preferences");
const rows = document.getElementById("preference-rows");
const result = document.getElementById("preference-result");
const api = panel.dataset.api;

function render(hubs) {
  rows.replaceChildren();
  for (const [hub, settings] of Object.entries(hubs)) {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.textContent = hub;
    row.append(name);
    const cell = document.createElement("td");
    for (const [channel, enabled] of Object.entries(settings.channels)) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = enabled;
      box.dataset.hub = hub;
      box.dataset.channel = channel;
      box.disabled = settings.required.includes(channel);
      label.append(box, " " + channel + (box.disabled ? " (required)" : ""));
      cell.append(label, " ");
    }
    row.append(cell);
    rows.append(row);
  }
}

async function answer(response) {
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function load() {
  try {
    render((await answer(await fetch(api, { credentials: "same-origin" }))).hubs);
  } catch (error) {
    result.textContent = "Could not load your settings: " + error.message;
  }
}

rows.addEventListener("change", async (event) => {
  const box = event.target;
  const choice = { hubs: { [box.dataset.hub]: { [box.dataset.channel]: box.checked } } };
  try {
    const body = await answer(
      await fetch(api, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(choice),
      }),
    );
    render(body.hubs);
    result.textContent = "Saved.";
  } catch (error) {
    box.checked = !box.checked;
    result.textContent = "Not saved: " + error.message;
  }
});

load();

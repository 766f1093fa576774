// "Notify me when the tab is closed": registers the service worker that the
// webpush blueprint serves, subscribes this browser with the server's VAPID
// public key, and stores the subscription for the viewer (POST
// <prefix>/subscribe), as docs/channels.rst shows. The shipped service worker
// then shows each push as a notification, and opens its url on click.

const section = document.getElementById("web-push");
const button = document.getElementById("web-push-button");
const status = document.getElementById("web-push-status");
const prefix = section.dataset.prefix;

function say(text, state) {
  status.textContent = text;
  status.classList.toggle("error", state === "error");
  section.dataset.state = state;
}

async function json(response) {
  const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
  const answer = isJson ? await response.json() : {};
  if (!response.ok) throw new Error(answer.error || response.status + " " + response.statusText);
  return answer;
}

async function subscribe() {
  // Asked from the click, as browsers require.
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("notifications are " + permission + " for this site");
  const registration = await navigator.serviceWorker.register(prefix + "/notifications-sw.js", { scope: "/" });
  await navigator.serviceWorker.ready;
  const { public_key } = await json(await fetch(prefix + "/vapid-public-key"));
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: public_key,
  });
  return json(
    await fetch(prefix + "/subscribe", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(subscription.toJSON()),
    }),
  );
}

if (section.dataset.state !== "off") {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    button.disabled = true;
    say("Off: this browser has no Web Push (or the page is not on https or localhost).", "off");
  } else {
    button.addEventListener("click", async () => {
      button.disabled = true;
      say("Subscribing…", "subscribing");
      try {
        await subscribe();
        const viewer = document.getElementById("viewer").textContent;
        say("On: this browser is notified of " + viewer + "'s user events, even with the tab closed.", "on");
      } catch (error) {
        say("Not subscribed: " + error.message, "error");
      } finally {
        button.disabled = false;
      }
    });
  }
}

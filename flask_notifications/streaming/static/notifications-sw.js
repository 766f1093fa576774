/*
 * Flask-Notifications service worker: shows each Web Push as a notification,
 * and opens its url on click.
 *
 * The webpush blueprint serves it at <prefix>/notifications-sw.js, allowed to
 * control the whole site:
 *
 *   navigator.serviceWorker.register("/notifications/push/notifications-sw.js", {scope: "/"})
 *
 * A push carries the JSON of WebPushConsumer's payload: title, body, url,
 * icon, tag, event_id, event_type (and truncated, when it was trimmed).
 */
"use strict";

/** The payload of a push, or a notification saying there was one. */
function payloadOf(event) {
  if (!event.data) {
    return {};
  }
  try {
    const data = event.data.json();
    return data && typeof data === "object" ? data : {};
  } catch (error) {
    return { body: event.data.text() };
  }
}

/** The page a click opens: the payload's url if it is on this site, else the site's root. */
function targetOf(url) {
  try {
    const target = new URL(url || "/", self.location.origin);
    // A push cannot send the user to another site: event fields may hold
    // text a user typed.
    return target.origin === self.location.origin ? target.href : self.location.origin + "/";
  } catch (error) {
    return self.location.origin + "/";
  }
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const data = payloadOf(event);
  const options = {
    body: typeof data.body === "string" ? data.body : "",
    data: { url: targetOf(data.url), event_id: data.event_id, event_type: data.event_type },
  };
  if (typeof data.icon === "string") {
    options.icon = data.icon;
  }
  if (typeof data.tag === "string" || typeof data.event_id === "string") {
    // One notification per event: a second copy of a push replaces the first.
    options.tag = data.tag || data.event_id;
  }
  const title = typeof data.title === "string" && data.title ? data.title : "New notification";
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = targetOf(event.notification.data && event.notification.data.url);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      for (const client of windows) {
        if (client.url === url && "focus" in client) {
          return client.focus();
        }
      }
      return self.clients.openWindow(url);
    }),
  );
});

self.addEventListener("pushsubscriptionchange", (event) => {
  // The push service replaced the subscription: store the new one through the
  // blueprint that served this script (<prefix>/subscribe).
  const options = event.oldSubscription ? event.oldSubscription.options : null;
  if (!options) {
    return;
  }
  event.waitUntil(
    self.registration.pushManager.subscribe(options).then((subscription) =>
      fetch(new URL("subscribe", self.location.href).href, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(subscription.toJSON()),
      }),
    ),
  );
});

// Type-checked against notifications.d.ts by test_declarations.py: what a
// page written in TypeScript does with the client.
import { compareIds, connect, formatEventId, parseEventId } from "./notifications.js";
import type { Badge, ConnectionState, Gap, NotificationEvent, NotificationsClient } from "./notifications.js";

const client: NotificationsClient = connect({ url: "/notifications/events", hubs: ["UserHub"], scope: "tom" });
client.subscribe("SystemHub", ["Inbox"]);
const off: () => void = client.on("UserHub", "user", (event: NotificationEvent, info) => {
  const title: string = event.title;
  const hub: string | null = info.hub;
  console.log(title, hub, info.id, info.lastEventId);
});
client.on("*", "gap", (gap: Gap) => console.log(gap.hub, gap.oldest_id, gap.reason));
client.on("Inbox", "inbox.badge", (badge: Badge) => console.log(badge.unread_count + badge.version));
client.onstate((state: ConnectionState, transport) => console.log(state, transport === "shared"));
off();
client.close();
const order: number = compareIds("1-0", "2-0");
const positions: Map<string, string> = parseEventId("a:1-0,b:2-0");
const id: string = formatEventId(positions);
console.log(order, id, client.state, client.transport);

// @ts-expect-error: a state that does not exist
const wrong: ConnectionState = "lost";
// @ts-expect-error: hubs are strings
connect({ hubs: [1] });
console.log(wrong);

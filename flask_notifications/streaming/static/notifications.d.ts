// TypeScript declarations of notifications.js (Flask-Notifications' browser client).

/** The state of the connection. "paused": open, but the server cannot read its backend. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "paused" | "closed";

/** "shared": one connection for every tab, through a SharedWorker; "tab": this tab's own. */
export type Transport = "shared" | "tab";

export interface ConnectOptions {
  /** The multiplexed stream: url_for("notifications.multiplexed_events"). Default "/notifications/events". */
  url?: string;
  /** The hubs to follow, by label (or id, "event-hub-<label>"). */
  hubs?: string[];
  /** What tabs must have in common to share a connection, besides the URL. Default: the server's
   * scope of the user (GET <url>/scope), so two users of one browser never share one. */
  scope?: string;
  /** false: one connection per tab, even where SharedWorker exists. Default true. */
  shared?: boolean;
  /** Where the resume point is kept across a reload. Default "session"; null keeps none. */
  storage?: "session" | "local" | null;
  /** Send cookies to a stream on another origin. */
  withCredentials?: boolean;
}

/** A Flask-Notifications event, as sent (event.to_json()). */
export interface NotificationEvent {
  event_id: string;
  event_type: string;
  title: string;
  body: string;
  timestamp: string;
  sender: string;
  recipients: string[];
  tags: string[];
  expiration_datetime: string | null;
  [field: string]: unknown;
}

/** The data of a "gap" event: events of `hub` after `last_event_id` are not coming. */
export interface Gap {
  hub: string;
  last_event_id: string;
  oldest_id: string | null;
  reason: "trimmed" | "ahead" | "overrun" | "reset" | "failover" | "outage" | "catch-up";
}

/** The data of an "inbox.badge" event (older versions are dropped before callbacks). */
export interface Badge extends NotificationEvent {
  unread_count: number;
  version: number;
}

export interface EventInfo {
  /** The hub's label; null for backend-down, backend-up and reconnect. */
  hub: string | null;
  /** The event type, or "gap", "backend-down", "backend-up", "reconnect". */
  type: string;
  /** The event's id in its hub; null for announcements. */
  id: string | null;
  /** The multiplexed id (every hub's position), if the frame had one. */
  lastEventId: string;
}

export type Callback<T = unknown> = (data: T, info: EventInfo) => void;

export interface NotificationsClient {
  readonly state: ConnectionState;
  readonly transport: Transport;
  /** Follow more hubs on the same connection. */
  subscribe(...hubs: (string | string[])[]): this;
  /** Call `callback` for events of `type` ("*": any) of `hub` ("*": any). Returns a function that removes it. */
  on(hub: string, type: "gap", callback: Callback<Gap>): () => void;
  on(hub: string, type: "inbox.badge", callback: Callback<Badge>): () => void;
  on(hub: string, type: "backend-down" | "backend-up", callback: Callback<{ backend: "down" | "up" }>): () => void;
  on(hub: string, type: "reconnect", callback: Callback<{ reason: string }>): () => void;
  on(hub: string, type: string, callback: Callback<NotificationEvent>): () => void;
  /** Call `callback` now and on every change of state. Returns a function that removes it. */
  onstate(callback: (state: ConnectionState, transport: Transport) => void): () => void;
  /** Stop calling this client's callbacks. */
  close(): void;
}

/** Connect to the multiplexed stream. Calls with the same url and scope share one connection per page,
 * and one per browser where SharedWorker exists. */
export function connect(options?: ConnectOptions): NotificationsClient;

/** Most hubs one server connection carries (the server's MAX_HUBS); the client opens one per MAX_HUBS hubs. */
export const MAX_HUBS: number;

/** Compare two message ids ("1700000000000-0"): negative, 0 or positive. */
export function compareIds(a: string, b: string): number;

/** Each hub's position in a multiplexed event id ("news:1700000000000-0,private:1700000000001-0"). */
export function parseEventId(id: string): Map<string, string>;

/** The multiplexed event id of each hub's position. */
export function formatEventId(positions: Iterable<[string, string]>): string;

// Flask-Notifications browser client: an ES module with no dependencies.
// docs/client.rst describes it. The same file is the script of the
// SharedWorker through which the tabs of a browser share one connection.

const PREFIX = "event-hub-";
const TYPES = ["message", "hubs", "gap", "backend-down", "backend-up", "reconnect"];
const SEEN = 2000; // event ids remembered, to drop duplicates
const RECENT = 200; // events a shared connection keeps for a tab that reloads
/** Most hubs one server connection carries (the server's MAX_HUBS): a client
 * that follows more opens one connection per MAX_HUBS hubs. */
export const MAX_HUBS = 20;
const STATES = ["closed", "open", "paused", "connecting", "reconnecting"]; // worst last

const label = (hub) => (String(hub).startsWith(PREFIX) ? String(hub).slice(PREFIX.length) : String(hub));

/** Compare two message ids ("1700000000000-0"): <0, 0 or >0. */
export function compareIds(a, b) {
  const [a1, a2] = String(a).split("-").map(BigInt);
  const [b1, b2] = String(b).split("-").map(BigInt);
  return a1 === b1 ? (a2 === b2 ? 0 : a2 < b2 ? -1 : 1) : a1 < b1 ? -1 : 1;
}

/** The position of each hub in a multiplexed event id ("news:1-0,private:2-0"). */
export function parseEventId(id) {
  const positions = new Map();
  for (const part of String(id || "").split(",")) {
    const at = part.indexOf(":");
    if (at > 0) positions.set(decodeURIComponent(part.slice(0, at)), part.slice(at + 1));
  }
  return positions;
}

/** The multiplexed event id of a position by hub. */
export function formatEventId(positions) {
  return [...positions].map(([hub, id]) => encodeURIComponent(hub) + ":" + id).join(",");
}

/** One EventSource to the multiplexed stream, with its own reconnect where
 * the browser's gives up, and the duplicates and stale badges dropped. */
class Connection {
  constructor(url, sink, withCredentials) {
    this.url = url;
    this.sink = sink;
    this.withCredentials = !!withCredentials;
    this.hubs = [];
    this.positions = new Map();
    this.seen = new Set();
    this.badges = new Map();
    this.failures = 0;
    this.down = false;
    this.state = "connecting";
    this.source = null;
    this.timer = 0;
    this.online = () => this.source || this.hubs.length === 0 || this.open();
    globalThis.addEventListener?.("online", this.online);
  }

  setHubs(hubs, positions) {
    for (const [hub, id] of positions || []) if (!this.positions.has(hub)) this.positions.set(hub, id);
    const grown = hubs.some((hub) => !this.hubs.includes(hub));
    this.hubs = [...new Set([...this.hubs, ...hubs])];
    if (grown) this.open();
  }

  lastEventId() {
    return formatEventId([...this.positions].filter(([hub]) => this.hubs.includes(hub)));
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.sink({ kind: "state", state });
  }

  open() {
    clearTimeout(this.timer);
    this.source?.close();
    const url = new URL(this.url, globalThis.location.href);
    for (const hub of this.hubs) url.searchParams.append("hub", hub);
    const id = this.lastEventId();
    if (id) url.searchParams.set("last_event_id", id);
    const source = (this.source = new EventSource(url, { withCredentials: this.withCredentials }));
    this.setState(this.failures ? "reconnecting" : "connecting");
    source.onopen = () => {
      this.failures = 0;
      this.setState(this.down ? "paused" : "open");
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an answer that is not 200, or not an event
        // stream): try again ourselves, with backoff and full jitter.
        source.close();
        this.source = null;
        const delay = 250 + Math.random() * Math.min(30000, 1000 * 2 ** this.failures++);
        this.timer = setTimeout(() => this.open(), delay);
      }
      this.setState("reconnecting");
    };
    for (const type of TYPES) {
      source.addEventListener(type, (message) => source === this.source && this.receive(type, message));
    }
  }

  receive(type, message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    if (message.lastEventId) {
      for (const [hub, id] of parseEventId(message.lastEventId)) this.positions.set(hub, id);
    }
    const base = { kind: "event", hub: null, type, id: null, data, lastEventId: message.lastEventId };
    if (type === "message") {
      const key = data.hub + " " + data.id;
      if (this.seen.has(key)) return;
      this.seen.add(key);
      if (this.seen.size > SEEN) this.seen.delete(this.seen.values().next().value);
      const event = data.event;
      const eventType = typeof event?.event_type === "string" ? event.event_type : data.type;
      if (eventType === "inbox.badge" && typeof event.version === "number") {
        // Two processes may publish two changes out of order: only a newer
        // version than the one shown counts.
        const who = data.hub + " " + (event.recipients || []).join(",");
        if (event.version <= (this.badges.get(who) ?? -Infinity)) return;
        this.badges.set(who, event.version);
      }
      this.sink({ ...base, hub: data.hub, type: eventType, id: data.id, data: event });
    } else if (type === "hubs") {
      this.sink({ ...base, kind: "position" });
    } else if (type === "gap") {
      this.sink({ ...base, hub: data.hub });
    } else {
      if (type === "backend-down" || type === "backend-up") {
        this.down = type === "backend-down";
        this.setState(this.down ? "paused" : "open");
      }
      this.sink(base);
    }
  }

  close() {
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
    globalThis.removeEventListener?.("online", this.online);
    this.setState("closed");
  }
}

/** The connections of one stream URL: one per MAX_HUBS hubs, since the
 * server refuses a stream of more (400). */
class Pool {
  constructor(url, sink, withCredentials) {
    this.url = url;
    this.sink = sink;
    this.withCredentials = withCredentials;
    this.connections = [];
    this.state = "connecting";
  }

  /** The connection that carries `hub`, if one does. */
  carrier(hub) {
    return this.connections.find((connection) => connection.hubs.includes(hub));
  }

  setHubs(hubs, positions) {
    const added = new Map();
    for (const hub of new Set(hubs)) {
      if (this.carrier(hub)) continue;
      let connection = this.connections.find((item) => item.hubs.length + (added.get(item)?.length || 0) < MAX_HUBS);
      if (!connection) {
        connection = new Connection(this.url, (message) => this.receive(connection, message), this.withCredentials);
        this.connections.push(connection);
      }
      added.set(connection, [...(added.get(connection) || []), hub]);
    }
    for (const [connection, more] of added) connection.setHubs([...connection.hubs, ...more], positions);
  }

  receive(connection, message) {
    if (message.kind !== "state") return this.sink(message);
    const states = this.connections.map((item) => (item === connection ? message.state : item.state));
    const state = states.reduce((worst, item) => (STATES.indexOf(item) > STATES.indexOf(worst) ? item : worst));
    if (state === this.state) return;
    this.state = state;
    this.sink({ kind: "state", state });
  }

  close() {
    for (const connection of this.connections) connection.close();
    this.connections = [];
    this.state = "closed";
    this.sink({ kind: "state", state: "closed" });
  }
}

// -- the SharedWorker ---------------------------------------------------------

if (typeof SharedWorkerGlobalScope !== "undefined" && globalThis instanceof SharedWorkerGlobalScope) {
  const ports = new Map(); // port -> the hubs its tab follows
  const recent = [];
  // By hub: the id after which `recent` holds every event of the hub.
  const floors = new Map();
  let connection = null;
  const broadcast = (message) => {
    if (message.kind === "event" && message.hub !== null) {
      recent.push(message);
      if (message.id == null) floors.delete(message.hub); // a gap: unknown
      if (recent.length > RECENT) {
        const { hub, id } = recent.shift();
        if (id != null && floors.has(hub)) floors.set(hub, id);
      }
    }
    for (const [port, hubs] of ports) {
      if (message.hub == null || hubs.has(message.hub)) port.postMessage(message);
    }
  };
  globalThis.onconnect = (connect) => {
    const port = connect.ports[0];
    port.onmessage = ({ data }) => {
      if (data.op === "subscribe") {
        connection ??= new Pool(data.url, broadcast, data.withCredentials);
        const hubs = new Set(data.hubs);
        ports.set(port, hubs);
        port.postMessage({ kind: "state", state: connection.state, transport: "shared" });
        // What this tab missed while it was away: what this connection
        // holds, and from the server what it no longer holds (the tab reads
        // it on a stream of its own until it reaches what the worker sends).
        const since = new Map(data.positions || []);
        for (const hub of hubs) {
          const carrier = connection.carrier(hub);
          const from = since.get(hub);
          const until = carrier?.positions.get(hub);
          if (!carrier || !from || (until && compareIds(from, until) >= 0)) continue;
          const floor = floors.get(hub);
          if (floor && compareIds(from, floor) >= 0) continue;
          if (recent.some((message) => message.hub === hub && message.id && compareIds(from, message.id) >= 0)) continue;
          port.postMessage({ kind: "catch-up", hub, from, until });
        }
        for (const message of recent) {
          const after = since.get(message.hub);
          if (hubs.has(message.hub) && after && message.id && compareIds(message.id, after) > 0) {
            port.postMessage(message);
          }
        }
        const fresh = [...hubs].filter((hub) => !connection.carrier(hub));
        connection.setHubs([...new Set([...ports.values()].flatMap((set) => [...set]))], since);
        for (const hub of fresh) {
          const start = connection.carrier(hub)?.positions.get(hub);
          if (start) floors.set(hub, start);
        }
      } else if (data.op === "leave") {
        ports.delete(port);
        if (ports.size === 0 && connection) {
          connection.close();
          connection = null;
          recent.length = 0;
          floors.clear();
        }
      }
    };
  };
}

// -- the page -----------------------------------------------------------------

const channels = new Map();

/** The connection of a page to one stream URL: shared with the other tabs
 * through a SharedWorker where there is one, else of this tab alone. */
class Channel {
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.hubs = new Set();
    this.clients = new Set();
    this.state = "connecting";
    this.transport = "tab";
    const kind = options.storage === undefined ? "session" : options.storage;
    this.storage = kind ? globalThis[kind + "Storage"] : null;
    this.storageKey = "flask-notifications " + url + " " + (options.scope || "");
    this.positions = new Map(this.load());
    this.port = null;
    this.connection = null;
    this.saving = 0;
    if (this.storage) globalThis.addEventListener("pagehide", () => this.saving && this.save());
    this.seen = new Set(); // hub and id of the events delivered to this tab
    this.catchUps = new Map(); // hub -> what this tab reads from the server itself
    if (options.shared !== false && typeof SharedWorker === "function") {
      this.transport = "shared";
      if (options.scope != null) this.share(String(options.scope));
      else {
        // No scope given: the server's, so that two users of one browser
        // never share a connection.
        const at = new URL(url);
        at.pathname = at.pathname.replace(/\/?$/, "/scope");
        at.search = "";
        fetch(at, { credentials: options.withCredentials ? "include" : "same-origin", cache: "no-store" })
          .then((response) => (response.ok ? response.json() : Promise.reject()))
          .then(({ scope }) => this.share("server " + scope))
          .catch(() => this.local());
      }
    } else this.local();
  }

  share(scope) {
    if (this.connection) return;
    try {
      const name = "flask-notifications " + this.url + " " + scope;
      const worker = new SharedWorker(import.meta.url, { type: "module", name });
      worker.onerror = () => this.local();
      this.port = worker.port;
      this.port.onmessage = ({ data }) => this.deliver(data);
      this.transport = "shared";
      globalThis.addEventListener("pagehide", () => this.port?.postMessage({ op: "leave" }));
      globalThis.addEventListener("pageshow", (event) => event.persisted && this.resubscribe());
    } catch {
      this.port = null;
    }
    if (!this.port) this.local();
    else if (this.hubs.size) this.resubscribe();
  }

  load() {
    try {
      return JSON.parse(this.storage?.getItem(this.storageKey) || "[]");
    } catch {
      return [];
    }
  }

  local() {
    if (this.connection) return;
    this.port?.close();
    this.port = null;
    this.transport = "tab";
    this.connection = new Pool(this.url, (message) => this.deliver(message), this.options.withCredentials);
    if (this.hubs.size) this.connection.setHubs([...this.hubs], this.positions);
  }

  addHubs(hubs) {
    const before = this.hubs.size;
    for (const hub of hubs) this.hubs.add(label(hub));
    if (this.hubs.size !== before) this.resubscribe();
  }

  resubscribe() {
    if (this.connection) return this.connection.setHubs([...this.hubs], this.positions);
    this.port?.postMessage({
      op: "subscribe",
      url: this.url,
      hubs: [...this.hubs],
      positions: [...this.positions],
      withCredentials: !!this.options.withCredentials,
    });
  }

  /** Read hub `hub` from the server after `from`, on a stream of this tab's
   * own, until it reaches what the shared worker sends (which waits till
   * then): the worker no longer holds what this tab missed while away. */
  catchUp({ hub, from, until }) {
    if (this.catchUps.has(hub)) return;
    const task = { held: [], last: from, failures: 0 };
    const finish = () => {
      if (this.catchUps.get(hub) !== task) return;
      this.catchUps.delete(hub);
      task.stream.close();
      for (const message of task.held) this.deliver(message, hub);
    };
    // Done once it has what the worker sends first, or had when asked.
    task.check = () => {
      const next = task.held.find((message) => message.id != null)?.id ?? until;
      if (next && compareIds(task.last, next) >= 0) finish();
    };
    task.stream = new Connection(
      this.url,
      (message) => {
        if (message.kind === "state" && message.state === "reconnecting" && ++task.failures > 3) {
          // The server does not answer: say what may be missing, never lose it silently.
          const data = { hub, reason: "catch-up", last_event_id: from, oldest_id: null };
          this.deliver({ kind: "event", hub, type: "gap", id: null, data, lastEventId: "" }, hub);
          finish();
        }
        if (message.kind !== "event" || message.hub !== hub) return;
        this.deliver(message, hub);
        if (message.id != null) task.last = message.id;
        task.check();
      },
      this.options.withCredentials,
    );
    this.catchUps.set(hub, task);
    task.stream.setHubs([hub], [[hub, from]]);
    task.check();
  }

  /** Write the resume point to storage now (it is written at most every
   * 200 ms while events come, and at once when the page is left, so that a
   * page left right after an event does not show it again when it comes
   * back). */
  save() {
    clearTimeout(this.saving);
    this.saving = 0;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify([...this.positions]));
    } catch {
      // Full or refused storage: the resume point lives for this page only.
    }
  }

  /** Pass on a message of the worker (or of this tab's connection, or of a
   * catch-up of hub `only`: then only its position counts). */
  deliver(message, only) {
    if (message.kind === "state") {
      this.state = message.state;
      for (const client of this.clients) client._state(message.state, this.transport);
      return;
    }
    if (message.kind === "catch-up") return this.catchUp(message);
    if (only === undefined && message.hub != null && this.catchUps.has(message.hub)) {
      const task = this.catchUps.get(message.hub);
      task.held.push(message);
      return task.check();
    }
    if (message.lastEventId) {
      for (const [hub, id] of parseEventId(message.lastEventId)) {
        // A hub that catches up moves on with its catch-up alone.
        if (only === undefined ? !this.catchUps.has(hub) : hub === only) this.positions.set(hub, id);
      }
      if (this.storage && !this.saving) this.saving = setTimeout(() => this.save(), 200);
    }
    if (message.kind !== "event") return;
    if (message.id != null) {
      // The worker's replay for a subscribe may repeat what its port holds.
      const key = message.hub + " " + message.id;
      if (this.seen.has(key)) return;
      this.seen.add(key);
      if (this.seen.size > SEEN) this.seen.delete(this.seen.values().next().value);
    }
    for (const client of this.clients) client._dispatch(message);
  }
}

/** What connect() returns: callbacks by hub and event type. */
class Client {
  constructor(channel) {
    this.channel = channel;
    this.handlers = [];
    this.stateHandlers = [];
  }

  /** The connection's state: "connecting", "open", "reconnecting", "paused"
   * (the server cannot read its backend) or "closed". */
  get state() {
    return this.channel.state;
  }

  /** "shared" (one connection for every tab) or "tab". */
  get transport() {
    return this.channel.transport;
  }

  /** Follow more hubs, on the same connection. */
  subscribe(...hubs) {
    this.channel.addHubs(hubs.flat());
    return this;
  }

  /** Call callback(data, info) for events of type `type` ("*": any) of hub
   * `hub` ("*": any). Returns a function that removes it. */
  on(hub, type, callback) {
    const handler = { hub: hub === "*" ? "*" : label(hub), type, callback };
    this.handlers.push(handler);
    if (handler.hub !== "*") this.subscribe(handler.hub);
    return () => {
      this.handlers = this.handlers.filter((item) => item !== handler);
    };
  }

  /** Call callback(state, transport) now and whenever the state changes. */
  onstate(callback) {
    this.stateHandlers.push(callback);
    callback(this.state, this.transport);
    return () => {
      this.stateHandlers = this.stateHandlers.filter((item) => item !== callback);
    };
  }

  _state(state, transport) {
    for (const callback of this.stateHandlers) callback(state, transport);
  }

  _dispatch(message) {
    const info = { hub: message.hub, type: message.type, id: message.id, lastEventId: message.lastEventId };
    for (const { hub, type, callback } of this.handlers) {
      const hubMatches = hub === "*" || message.hub === null || hub === message.hub;
      if (hubMatches && (type === "*" || type === message.type)) {
        try {
          callback(message.data, info);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      }
    }
  }

  /** Stop calling this client's callbacks. */
  close() {
    this.handlers = [];
    this.stateHandlers = [];
    this.channel.clients.delete(this);
  }
}

/** Connect to the multiplexed stream of `options.hubs` (labels or ids).
 * Every call with the same `url` and `scope` in a page shares one
 * connection, and so do the tabs of a browser where SharedWorker exists. */
export function connect(options = {}) {
  const url = new URL(options.url || "/notifications/events", globalThis.location.href).href;
  const key = url + " " + (options.scope || "");
  let channel = channels.get(key);
  if (!channel) channels.set(key, (channel = new Channel(url, options)));
  const client = new Client(channel);
  channel.clients.add(client);
  client.subscribe(options.hubs || []);
  return client;
}

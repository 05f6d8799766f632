// The client's state: rooms and their messages, the outbox, names, presence,
// typing, the connection. Every change happens here and is announced to
// subscribers as one small event naming what changed, so each view redraws
// only that. No DOM, no network: the protocol side (chat.js) calls these
// functions with what the server said.
//
// Events (`{type, ...}`):
//   rooms                      the room list changed (joined, left)
//   current    {prev, room}    another room is shown
//   room       {room}          a room's unread count, loading state or refusal changed
//   messages   {room, added}   stored messages were added (sorted by seq; any position)
//   changed    {room, msg}     a held message was edited or deleted (same seq)
//   outbox     {room}          the room's unconfirmed messages changed
//   name       {id}            a user's display name changed
//   presence   {room}          who is online in a room changed
//   typing     {room}          who is typing in a room changed
//   connection                 the connection state changed
//   limits                     the server said what it accepts (content and id bytes)
//   identity                   the own user id changed (signed in as someone else)

import { KEYS } from "./persist.js";
import { MAX_CONTENT_BYTES, MAX_ID_BYTES, shortId } from "./format.js";

/** Names kept across visits (the most recent ones). */
const NAMES_KEPT = 500;
const NAMES_SAVE_DELAY_MS = 500;

const validOutbox = (list) =>
  (Array.isArray(list) ? list : []).filter((m) => m && typeof m.id === "string" && typeof m.room_id === "string");

export function createStore({ persist, userId, userName, setTimer = setTimeout, clearTimer = clearTimeout }) {
  const listeners = new Set();
  const emit = (event) => {
    for (const fn of listeners) fn(event);
  };

  const state = {
    userId, // the own id; with --auth jwt, the token's `sub` (adoptIdentity)
    userName,
    /** Room name -> room; the Map's order is the side list's order. */
    rooms: new Map(),
    current: null,
    /** Typed but not yet confirmed: {id, room_id, content, created, state: "pending"|"failed", error, sentAt}. */
    outbox: validOutbox(persist.get(KEYS.outbox, [])),
    names: new Map(Object.entries(persist.get(KEYS.names, {}) || {})),
    connection: { state: "connecting", text: "Connecting…" },
    /** What the server accepts, in UTF-8 bytes: its defaults until it says (setLimits). */
    limits: { content: MAX_CONTENT_BYTES, id: MAX_ID_BYTES },
  };
  state.names.set(userId, userName);
  const me = () => state.userId;

  // The tabs of one browser share the outbox and the room list in storage.
  // Each change starts from what is stored (read, change, write: a tab runs
  // one task at a time), so no tab overwrites another's items. Once a write
  // fails (storage full or disabled), this tab's memory is the truth.
  let shared = true;
  /** The stored outbox becomes this tab's; when each item was last sent here is kept. */
  function loadOutbox() {
    if (!shared) return;
    const stored = persist.get(KEYS.outbox, null);
    if (!Array.isArray(stored)) return;
    const sent = new Map(state.outbox.map((o) => [o.id, o.sentAt]));
    state.outbox = validOutbox(stored);
    for (const o of state.outbox) if (sent.get(o.id) && !o.sentAt) o.sentAt = sent.get(o.id);
  }
  const saveOutbox = () => {
    if (!persist.set(KEYS.outbox, state.outbox)) shared = false;
  };
  /** Adds or removes one room in the stored list (others' changes stay). */
  function saveRooms({ add = null, remove = null } = {}) {
    const stored = shared ? persist.get(KEYS.rooms, null) : null;
    let list = Array.isArray(stored) ? stored.filter((n) => typeof n === "string") : [...state.rooms.keys()];
    if (add !== null && !list.includes(add)) list.push(add);
    if (remove !== null) list = list.filter((n) => n !== remove);
    if (!persist.set(KEYS.rooms, list)) shared = false;
  }
  let namesTimer = null;
  const saveNames = () => {
    clearTimer(namesTimer);
    namesTimer = setTimer(() => {
      persist.set(KEYS.names, Object.fromEntries([...state.names.entries()].slice(-NAMES_KEPT)));
    }, NAMES_SAVE_DELAY_MS);
  };

  function newRoom(name) {
    return {
      name,
      bySeq: new Map(), // seq (number) -> message
      minSeq: 0, // lowest seq held (0 = none)
      maxSeq: 0, // highest seq held
      lastSeq: null, // highest seq up to which nothing is missing; null = never loaded
      hasOlder: true,
      loadingOlder: false,
      unread: 0,
      online: null, // Set of user ids from the last presence snapshot; null = not known yet
      typing: new Set(), // user ids typing now
      revision: null, // highest edit revision known (docs/protocol.md, catching up); null = none yet
      error: null, // why the server refused to let us in (shown instead of the messages); not joined again
    };
  }

  const api = {
    state,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },

    // ---------- rooms ----------

    room: (name) => state.rooms.get(name),
    currentRoom: () => (state.current === null ? null : state.rooms.get(state.current) || null),

    /** Adds a room (no-op if known); returns [room, isNew]. */
    addRoom(name) {
      let r = state.rooms.get(name);
      if (r) return [r, false];
      r = newRoom(name);
      state.rooms.set(name, r);
      saveRooms({ add: name });
      emit({ type: "rooms" });
      return [r, true];
    },

    /** Forgets a room and its unconfirmed messages. */
    removeRoom(name) {
      if (!state.rooms.delete(name)) return;
      saveRooms({ remove: name });
      loadOutbox();
      const before = state.outbox.length;
      state.outbox = state.outbox.filter((m) => m.room_id !== name);
      if (state.outbox.length !== before) saveOutbox();
      if (state.current === name) {
        const prev = state.current;
        state.current = null;
        emit({ type: "current", prev, room: null });
      }
      emit({ type: "rooms" });
    },

    /** Shows a room (it must be known); its unread count is cleared. */
    select(name) {
      const r = state.rooms.get(name);
      if (!r) return;
      const prev = state.current;
      state.current = name;
      if (r.unread) {
        r.unread = 0;
        emit({ type: "room", room: name });
      }
      if (prev !== name) emit({ type: "current", prev, room: name });
    },

    /** Loading state and paging of a room: {lastSeq, hasOlder, loadingOlder, error}. */
    setRoomMeta(name, patch) {
      const r = state.rooms.get(name);
      if (!r) return;
      let changed = false;
      for (const [k, v] of Object.entries(patch)) {
        if (r[k] !== v) {
          r[k] = v;
          changed = true;
        }
      }
      if (changed) emit({ type: "room", room: name });
    },

    /**
     * The server refused the room for good (`reason`), or it is to be tried
     * again (null). A refused room stays in the list, marked, but leaves the
     * stored list: another visit or tab does not ask for it again.
     */
    setRefused(name, reason) {
      const r = state.rooms.get(name);
      if (!r || r.error === reason) return;
      r.error = reason;
      saveRooms(reason === null ? { add: name } : { remove: name });
      emit({ type: "room", room: name });
    },

    /** Counts messages of others that arrived in a room not shown. */
    addUnread(name, n) {
      const r = state.rooms.get(name);
      if (!r || !n || name === state.current) return;
      r.unread += n;
      emit({ type: "room", room: name });
    },

    totalUnread() {
      let n = 0;
      for (const r of state.rooms.values()) if (r.name !== state.current) n += r.unread;
      return n;
    },

    // ---------- messages ----------

    /**
     * Stores messages the server sent (live or from history) and confirms
     * the own ones in the outbox. Returns the ones that were new, by seq.
     */
    insertMessages(name, msgs) {
      const r = state.rooms.get(name);
      const confirmed = api.confirmOutbox(msgs, false);
      if (!r) {
        if (confirmed) emitOutboxChanged(confirmed);
        return [];
      }
      const added = [];
      for (const m of msgs) {
        const seq = Number(m.seq);
        if (!Number.isSafeInteger(seq) || seq <= 0 || r.bySeq.has(seq)) continue;
        const msg = { ...m, seq };
        r.bySeq.set(seq, msg);
        if (!r.minSeq || seq < r.minSeq) r.minSeq = seq;
        if (seq > r.maxSeq) r.maxSeq = seq;
        added.push(msg);
      }
      if (r.lastSeq !== null) while (r.bySeq.has(r.lastSeq + 1)) r.lastSeq += 1;
      if (added.length) {
        added.sort((a, b) => a.seq - b.seq);
        emit({ type: "messages", room: name, added });
      }
      if (confirmed) emitOutboxChanged(confirmed);
      return added;
    },

    /**
     * A message as it is now after an edit or deletion (message_changed, or a
     * catch-up page): replaces the held one at its seq if this is newer; the
     * room's known revision follows. Returns whether anything shown changed.
     */
    changeMessage(name, m) {
      const r = state.rooms.get(name);
      const seq = Number(m && m.seq);
      if (!r || !Number.isSafeInteger(seq) || seq <= 0) return false;
      const rev = Number(m.revision) || 0;
      if (rev > (r.revision || 0)) r.revision = rev;
      const held = r.bySeq.get(seq);
      if (!held || (Number(held.revision) || 0) >= rev) return false;
      const msg = { ...m, seq };
      r.bySeq.set(seq, msg);
      emit({ type: "changed", room: name, msg });
      return true;
    },

    /** A revision the room is known to be at (a history answer); only ever goes up. */
    noteRevision(name, rev) {
      const r = state.rooms.get(name);
      const n = Number(rev);
      if (r && Number.isSafeInteger(n) && n > (r.revision || 0)) r.revision = n;
      else if (r && r.revision === null && n === 0) r.revision = 0;
    },

    /** The room's messages in seq order (for a view built from scratch). */
    messagesOf(name) {
      const r = state.rooms.get(name);
      return r ? [...r.bySeq.values()].sort((a, b) => a.seq - b.seq) : [];
    },

    // ---------- outbox ----------

    /** Queues a message typed by the user; returns the outbox item. */
    queue(room, content, id, now = Date.now()) {
      // `sender`: who typed it, so another user signing in on this browser does not send it.
      const item = { id, room_id: room, sender: me(), content, created: now, state: "pending" };
      loadOutbox();
      state.outbox.push(item);
      saveOutbox();
      emit({ type: "outbox", room });
      return item;
    },

    outboxOf: (room) => state.outbox.filter((m) => m.room_id === room),
    findOutbox: (id) => state.outbox.find((m) => m.id === id),

    /** Drops the outbox items these stored messages confirm; returns the rooms touched (or null). */
    confirmOutbox(msgs, announce = true) {
      let rooms = null;
      if (msgs.some((m) => m.sender_id === me())) loadOutbox();
      for (const m of msgs) {
        if (m.sender_id !== me()) continue;
        const i = state.outbox.findIndex((o) => o.id === m.id && o.room_id === m.room_id);
        if (i < 0) continue;
        state.outbox.splice(i, 1);
        (rooms ||= new Set()).add(m.room_id);
      }
      if (rooms) {
        saveOutbox();
        if (announce) emitOutboxChanged(rooms);
      }
      return rooms;
    },

    /** The server refused an outbox item for good. */
    failOutbox(id, error) {
      loadOutbox();
      const item = api.findOutbox(id);
      if (!item) return;
      item.state = "failed";
      item.error = error;
      saveOutbox();
      emit({ type: "outbox", room: item.room_id });
    },

    /** A failed item is to be sent again. Returns it (or undefined). */
    retryOutbox(id) {
      loadOutbox();
      const item = api.findOutbox(id);
      if (!item) return undefined;
      item.state = "pending";
      delete item.error;
      saveOutbox();
      emit({ type: "outbox", room: item.room_id });
      return item;
    },

    discardOutbox(id) {
      loadOutbox();
      const item = api.findOutbox(id);
      if (!item) return;
      state.outbox = state.outbox.filter((m) => m !== item);
      saveOutbox();
      emit({ type: "outbox", room: item.room_id });
    },

    /** Another tab changed the stored outbox: take it, and redraw the rooms touched. */
    syncOutbox() {
      const before = state.outbox;
      loadOutbox();
      const rooms = new Set([...before, ...state.outbox].map((o) => o.room_id));
      emitOutboxChanged(rooms);
    },

    /** Records when an item was last sent (not an event: nothing shown depends on it). */
    markSent(item, now = Date.now()) {
      item.sentAt = now;
    },

    // ---------- names ----------

    /** A user's display name, or a short form of the id until it is known. */
    nameOf(id) {
      if (id === me()) return state.userName;
      return state.names.has(id) ? state.names.get(id) : shortId(id);
    },
    knowsName: (id) => state.names.has(id) && state.names.get(id) !== id,

    /**
     * Who may be mentioned in a room ([{id, name}]): who is online there, who
     * wrote there, and everyone whose name is known (a mention of a known
     * name is one wherever it is written).
     */
    people(room) {
      const ids = new Set(state.names.keys());
      const r = room === undefined ? null : state.rooms.get(room);
      if (r) {
        for (const id of r.online || []) ids.add(id);
        for (const m of r.bySeq.values()) ids.add(m.sender_id);
      }
      ids.add(me());
      return [...ids].filter((id) => typeof id === "string").map((id) => ({ id, name: api.nameOf(id) }));
    },

    /** A user is called `name` from now on (looked up, or announced by the server). */
    renameUser(id, name) {
      if (typeof id !== "string" || typeof name !== "string" || !name) return;
      if (id === me()) {
        api.setUserName(name);
        return;
      }
      if (state.names.get(id) === name) return;
      state.names.set(id, name);
      saveNames();
      emit({ type: "name", id });
    },

    /** The own display name, as the server stored it. */
    setUserName(name) {
      if (state.userName === name) return;
      state.userName = name;
      state.names.set(me(), name);
      persist.set(KEYS.userName, name);
      emit({ type: "name", id: me() });
    },

    /**
     * Signed in as `sub` (--auth jwt): the own id changes. What another user
     * of this browser typed is not sent as this one. Views redraw (identity).
     */
    adoptIdentity(sub, name) {
      if (sub === state.userId) return;
      state.userId = sub;
      persist.set(KEYS.userId, sub);
      loadOutbox();
      state.outbox = state.outbox.filter((o) => !o.sender || o.sender === sub);
      saveOutbox();
      state.userName = name;
      state.names.set(sub, name);
      persist.set(KEYS.userName, name);
      emit({ type: "identity" });
    },

    // ---------- presence & typing ----------

    /** A presence frame: a snapshot replaces the set, a delta adds and removes. */
    setPresence(name, p) {
      const r = state.rooms.get(name);
      if (!r) return;
      const online = Array.isArray(p.online) ? p.online.filter((x) => typeof x === "string") : [];
      const offline = Array.isArray(p.offline) ? p.offline.filter((x) => typeof x === "string") : [];
      if (p.snapshot || !r.online) r.online = new Set(online);
      else for (const id of online) r.online.add(id);
      let typing = false;
      for (const id of offline) {
        r.online.delete(id);
        typing = r.typing.delete(id) || typing;
      }
      emit({ type: "presence", room: name });
      if (typing) emit({ type: "typing", room: name });
    },

    setTyping(name, id, on) {
      const r = state.rooms.get(name);
      if (!r || id === me() || r.typing.has(id) === on) return;
      if (on) r.typing.add(id);
      else r.typing.delete(id);
      emit({ type: "typing", room: name });
    },

    // ---------- connection ----------

    /** The server's `limits` answer; a missing or nonsensical value keeps the one known. */
    setLimits(l) {
      const pick = (v, known) => (Number.isSafeInteger(v) && v > 0 ? v : known);
      const next = { content: pick(l && l.max_content_bytes, state.limits.content), id: pick(l && l.max_id_bytes, state.limits.id) };
      if (next.content === state.limits.content && next.id === state.limits.id) return;
      state.limits = next;
      emit({ type: "limits" });
    },

    /** Connection state ("connecting", "connected", "reconnecting", "offline") and its text. */
    setConnection(s, text) {
      const c = state.connection;
      if (c.state === s && c.text === text) return;
      state.connection = { state: s, text, prev: c.state };
      emit({ type: "connection" });
    },

    /** The connection closed: presence and typing are unknown until the re-join. */
    disconnected() {
      for (const r of state.rooms.values()) {
        r.online = null;
        r.loadingOlder = false;
        const typing = r.typing.size > 0;
        r.typing.clear();
        emit({ type: "presence", room: r.name });
        if (typing) emit({ type: "typing", room: r.name });
      }
    },
  };

  function emitOutboxChanged(rooms) {
    for (const room of rooms) emit({ type: "outbox", room });
  }

  return api;
}

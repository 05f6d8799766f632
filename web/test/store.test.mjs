// Unit tests of the store: every change is one event naming what changed,
// and persisted state survives a new store over the same storage.
import assert from "node:assert/strict";
import { test } from "node:test";
import { KEYS, createPersist, memoryBackend } from "../persist.js";
import { createStore } from "../store.js";

/** A store over memory storage, with its events recorded; timers run at once. */
function setup(entries = {}) {
  const backend = memoryBackend(entries);
  const persist = createPersist(backend);
  const store = createStore({ persist, userId: "me", userName: "Me", setTimer: (fn) => fn(), clearTimer: () => {} });
  const events = [];
  store.subscribe((e) => events.push(e));
  return { store, events, persist, backend };
}
const msg = (seq, extra = {}) => ({ id: `m${seq}`, room_id: "r", sender_id: "u1", content: `m${seq}`, seq: String(seq), ...extra });

test("messages are stored once, by seq, and announced sorted", () => {
  const { store, events } = setup();
  store.addRoom("r");
  events.length = 0;
  const added = store.insertMessages("r", [msg(3), msg(1), msg(2), msg(1)]);
  assert.deepEqual(added.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(events, [{ type: "messages", room: "r", added }]);
  assert.deepEqual(store.insertMessages("r", [msg(2)]), []);
  assert.equal(events.length, 1, "a duplicate changes nothing");
  const r = store.room("r");
  assert.equal(r.minSeq, 1);
  assert.equal(r.maxSeq, 3);
});

test("invalid seqs from the wire are ignored", () => {
  const { store } = setup();
  store.addRoom("r");
  assert.deepEqual(store.insertMessages("r", [msg("x"), msg(-1), msg(0), { ...msg(1), seq: "1e400" }]), []);
});

test("lastSeq advances over what is contiguous only", () => {
  const { store } = setup();
  store.addRoom("r");
  store.setRoomMeta("r", { lastSeq: 0 });
  store.insertMessages("r", [msg(1), msg(2), msg(4)]);
  assert.equal(store.room("r").lastSeq, 2);
  store.insertMessages("r", [msg(3)]);
  assert.equal(store.room("r").lastSeq, 4);
});

test("an own message confirms its outbox item: messages first, then outbox", () => {
  const { store, events, persist } = setup();
  store.addRoom("r");
  store.queue("r", "hello", "id-1", 1000);
  assert.equal(persist.get(KEYS.outbox, []).length, 1);
  events.length = 0;
  store.insertMessages("r", [{ id: "id-1", room_id: "r", sender_id: "me", content: "hello", seq: "1" }]);
  assert.deepEqual(
    events.map((e) => e.type),
    ["messages", "outbox"],
    "the list sees the stored message while the pending one is still drawn",
  );
  assert.equal(store.outboxOf("r").length, 0);
  assert.equal(persist.get(KEYS.outbox, []).length, 0);
});

test("failed, retried and discarded outbox items", () => {
  const { store, events } = setup();
  store.addRoom("r");
  store.queue("r", "x", "a");
  store.failOutbox("a", "too long");
  assert.equal(store.findOutbox("a").state, "failed");
  store.retryOutbox("a");
  assert.equal(store.findOutbox("a").state, "pending");
  assert.equal(store.findOutbox("a").error, undefined);
  store.discardOutbox("a");
  assert.equal(store.findOutbox("a"), undefined);
  assert.deepEqual(
    events.filter((e) => e.type === "outbox").map((e) => e.room),
    ["r", "r", "r", "r"],
  );
});

test("unread counts only rooms not shown, and selecting clears them", () => {
  const { store } = setup();
  store.addRoom("a");
  store.addRoom("b");
  store.select("a");
  store.addUnread("a", 2);
  store.addUnread("b", 3);
  assert.equal(store.room("a").unread, 0);
  assert.equal(store.totalUnread(), 3);
  store.select("b");
  assert.equal(store.room("b").unread, 0);
  assert.equal(store.totalUnread(), 0);
});

test("renameUser announces a change once and keeps the name across visits", () => {
  const { store, events, backend } = setup();
  assert.equal(store.nameOf("0123456789abcdef"), "01234567…");
  store.renameUser("u1", "Alice");
  store.renameUser("u1", "Alice");
  assert.deepEqual(events, [{ type: "name", id: "u1" }]);
  assert.equal(store.nameOf("u1"), "Alice");
  const again = createStore({ persist: createPersist(backend), userId: "me", userName: "Me" });
  assert.equal(again.nameOf("u1"), "Alice");
  store.renameUser("me", "Myself");
  assert.equal(store.state.userName, "Myself");
  store.renameUser("u1", 42);
  assert.equal(store.nameOf("u1"), "Alice", "a name that is not a string is ignored");
});

test("presence: a snapshot replaces, a delta adds and removes (and stops typing)", () => {
  const { store, events } = setup();
  store.addRoom("r");
  store.setPresence("r", { snapshot: true, online: ["me", "u1"] });
  store.setTyping("r", "u1", true);
  store.setPresence("r", { online: ["u2"], offline: ["u1"] });
  const r = store.room("r");
  assert.deepEqual([...r.online].sort(), ["me", "u2"]);
  assert.equal(r.typing.size, 0);
  assert.deepEqual(
    events.filter((e) => e.room === "r").map((e) => e.type),
    ["presence", "typing", "presence", "typing"],
  );
  store.setTyping("r", "me", true);
  assert.equal(r.typing.size, 0, "the own user is never shown typing");
});

test("leaving a room drops its outbox and, if shown, the current room", () => {
  const { store, events } = setup();
  store.addRoom("r");
  store.addRoom("s");
  store.select("r");
  store.queue("r", "x", "a");
  store.queue("s", "y", "b");
  events.length = 0;
  store.removeRoom("r");
  assert.equal(store.state.current, null);
  assert.deepEqual(store.state.outbox.map((o) => o.id), ["b"]);
  assert.deepEqual(events.map((e) => e.type), ["current", "rooms"]);
});

test("a corrupt outbox in storage is filtered, not fatal", () => {
  const { store } = setup({ [KEYS.outbox]: JSON.stringify([null, { id: 1 }, { id: "a", room_id: "r", content: "x" }]) });
  assert.deepEqual(store.state.outbox.map((o) => o.id), ["a"]);
  const broken = setup({ [KEYS.outbox]: "{not json" });
  assert.deepEqual(broken.store.state.outbox, []);
});

test("an edit replaces the held message at its seq, once, and the room's revision follows", () => {
  const { store, events } = setup();
  store.addRoom("r");
  store.insertMessages("r", [msg(1), msg(2)]);
  store.noteRevision("r", "0");
  assert.equal(store.room("r").revision, 0);
  events.length = 0;
  const edited = msg(2, { content: "new", edited_at: "2026-12-02T10:00:00Z", revision: "1" });
  assert.equal(store.changeMessage("r", edited), true);
  assert.equal(events.length, 1);
  assert.equal(events[0].type, "changed");
  assert.equal(events[0].msg.seq, 2);
  assert.equal(store.room("r").bySeq.get(2).content, "new");
  assert.equal(store.room("r").revision, 1);
  // The same change again (an idempotent resend, or a catch-up page) changes nothing.
  assert.equal(store.changeMessage("r", edited), false);
  assert.equal(events.length, 1);
  // An older state never overwrites a newer one.
  store.changeMessage("r", msg(2, { content: "", deleted: true, revision: "3" }));
  assert.equal(store.changeMessage("r", msg(2, { content: "stale", revision: "2" })), false);
  assert.equal(store.room("r").bySeq.get(2).deleted, true);
  // A change of a message not held moves the revision but emits nothing (its page loads as it is now).
  events.length = 0;
  assert.equal(store.changeMessage("r", msg(40, { revision: "7" })), false);
  assert.deepEqual(events, []);
  assert.equal(store.room("r").revision, 7);
  // The revision only goes up; bad input is ignored.
  store.noteRevision("r", "5");
  store.noteRevision("r", "x");
  assert.equal(store.room("r").revision, 7);
  assert.equal(store.changeMessage("r", { ...msg(1), seq: "-1" }), false);
  assert.equal(store.changeMessage("nope", msg(1, { revision: "9" })), false);
});

test("two stores over one storage (two tabs) keep each other's outbox items and rooms", () => {
  const backend = memoryBackend();
  const persist = createPersist(backend);
  const a = createStore({ persist, userId: "me", userName: "Me", setTimer: (fn) => fn(), clearTimer: () => {} });
  const b = createStore({ persist, userId: "me", userName: "Me", setTimer: (fn) => fn(), clearTimer: () => {} });
  a.addRoom("r");
  b.addRoom("s");
  a.queue("r", "from a", "ida");
  b.queue("s", "from b", "idb");
  assert.deepEqual(persist.get(KEYS.outbox, []).map((o) => o.id), ["ida", "idb"]);
  assert.deepEqual(persist.get(KEYS.rooms, []), ["r", "s"]);
  // a confirms b's message (it saw it stored): gone for both.
  a.insertMessages("s", [{ id: "idb", room_id: "s", sender_id: "me", content: "from b", seq: "1" }]);
  assert.deepEqual(persist.get(KEYS.outbox, []).map((o) => o.id), ["ida"]);
  const events = [];
  b.subscribe((e) => events.push(e));
  b.syncOutbox();
  assert.deepEqual(b.state.outbox.map((o) => o.id), ["ida"]);
  assert.deepEqual(events.map((e) => `${e.type}:${e.room}`).sort(), ["outbox:r", "outbox:s"]);
  b.removeRoom("s");
  assert.deepEqual(persist.get(KEYS.rooms, []), ["r"]);
});

test("when storage refuses a write, the outbox lives on in memory", () => {
  // Full: what is stored stays as it was, new writes fail.
  const persist = createPersist({
    getItem: (k) => (k === KEYS.outbox ? "[]" : null),
    setItem: () => {
      throw new Error("QuotaExceededError");
    },
  });
  const store = createStore({ persist, userId: "me", userName: "Me", setTimer: (fn) => fn(), clearTimer: () => {} });
  store.addRoom("r");
  store.queue("r", "one", "id1");
  store.queue("r", "two", "id2");
  assert.deepEqual(store.state.outbox.map((o) => o.id), ["id1", "id2"]);
});

test("the server's limits replace the defaults; a missing or bad value keeps the one known", () => {
  const { store, events } = setup();
  assert.deepEqual(store.state.limits, { content: 4096, id: 128 });
  store.setLimits({ max_content_bytes: 100, max_id_bytes: 128, max_rooms_per_stream: 3 });
  assert.deepEqual(store.state.limits, { content: 100, id: 128 });
  assert.deepEqual(events, [{ type: "limits" }]);
  store.setLimits({ max_content_bytes: 100 });
  store.setLimits({ max_content_bytes: "200", max_id_bytes: -1 });
  store.setLimits(undefined);
  assert.deepEqual(store.state.limits, { content: 100, id: 128 });
  assert.equal(events.length, 1, "nothing changed, nothing announced");
});

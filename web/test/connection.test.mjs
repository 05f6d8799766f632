// Unit tests of the connection over a scripted WebSocket: answers matched to
// calls, frames that answer nothing passed on, a close failing what waits
// and scheduling a reconnect.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createConnection } from "../connection.js";

class FakeSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.made.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen();
  }
  receive(frame) {
    this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  close() {
    this.readyState = 3;
    this.onclose();
  }
}

function setup(t) {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  FakeSocket.made = [];
  const log = { frames: [], status: [], opened: 0, closed: 0, dropped: 0 };
  const conn = createConnection(
    {
      onOpen: () => log.opened++,
      onDrop: () => log.dropped++,
      onFrame: (f) => log.frames.push(f),
      onClose: () => log.closed++,
      onStatus: (s) => log.status.push(s),
    },
    { url: "ws://test/", WebSocketImpl: FakeSocket },
  );
  conn.connect();
  return { conn, log, socket: () => FakeSocket.made.at(-1) };
}

test("a call resolves with its answer; other frames go to onFrame", async (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  assert.deepEqual(log.status, ["connecting"], "connected is the caller's to say, after signing in");
  assert.equal(log.opened, 1);
  const answer = conn.call("get_user", { user_id: "u1" });
  const sent = socket().sent[0];
  assert.deepEqual(sent.get_user, { user_id: "u1" });
  socket().receive({ chat_message: { id: "x" } });
  socket().receive({ user: { name: "A" }, request_id: sent.request_id });
  assert.deepEqual((await answer).user, { name: "A" });
  assert.deepEqual(log.frames, [{ chat_message: { id: "x" } }]);
});

test("an error answer rejects its call; garbage is ignored", async (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  const answer = conn.call("join_room", { room_id: "" });
  socket().receive("not json");
  socket().receive({ error: { code: "INVALID_ARGUMENT", message: "empty" }, request_id: socket().sent[0].request_id });
  await assert.rejects(answer, { code: "INVALID_ARGUMENT" });
  assert.deepEqual(log.frames, []);
});

test("a close fails waiting calls and reconnects after a backoff", async (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  const answer = conn.call("get_user", { user_id: "u1" });
  socket().close();
  await assert.rejects(answer, { code: "UNAVAILABLE" });
  assert.equal(log.closed, 1);
  assert.equal(log.dropped, 1);
  assert.equal(log.status.at(-1), "reconnecting");
  assert.equal(FakeSocket.made.length, 1);
  t.mock.timers.tick(250);
  assert.equal(FakeSocket.made.length, 2, "reconnected within the first backoff (<= 250 ms)");
  assert.equal(conn.isOpen(), false);
  await assert.rejects(conn.call("x", {}), { code: "UNAVAILABLE" }, "no call while not open");
});

/** Answers the pings `socket` was sent (as the gateway does), returning how many. */
function answerPings(socket) {
  const isPing = (f) => Object.keys(f).length === 1 && typeof f.request_id === "string";
  const pings = socket.sent.filter(isPing);
  socket.sent = socket.sent.filter((f) => !isPing(f));
  for (const p of pings) socket.receive({ request_id: p.request_id });
  return pings.length;
}

test("a call with no answer times out (the socket itself answering pings)", async (t) => {
  const { conn, socket } = setup(t);
  socket().open();
  const answer = conn.call("get_user", {});
  t.mock.timers.tick(25000);
  assert.equal(answerPings(socket()), 1);
  t.mock.timers.tick(10000);
  await assert.rejects(answer, { code: "DEADLINE_EXCEEDED" });
});

test("a silent socket is pinged; an answer keeps it, none gives it up and reconnects", async (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  // Frames keep coming: no ping. (It is checked every 25 s whether any came.)
  for (let i = 0; i < 3; i++) {
    t.mock.timers.tick(20000);
    socket().receive({ typing: { room_id: "r" } });
  }
  t.mock.timers.tick(15000);
  assert.deepEqual(socket().sent, [], "no ping while frames come");
  // A check found none: a ping, only a request_id; its answer is no frame for the page.
  t.mock.timers.tick(25000);
  const [ping] = socket().sent;
  assert.deepEqual(Object.keys(ping), ["request_id"]);
  assert.equal(answerPings(socket()), 1);
  assert.equal(log.frames.length, 3, "the answer to a ping is not passed on");
  t.mock.timers.tick(5000);
  assert.equal(conn.isOpen(), true, "an answered ping keeps the socket");
  // Silence again, and this time the ping goes unanswered.
  const answer = conn.call("get_user", {});
  t.mock.timers.tick(25000);
  assert.equal(socket().sent.filter((f) => !f.get_user).length, 1, "pinged again");
  t.mock.timers.tick(4999);
  assert.equal(conn.isOpen(), true);
  t.mock.timers.tick(1);
  await assert.rejects(answer, { code: "UNAVAILABLE" });
  assert.equal(socket().readyState, 3, "the dead socket is closed");
  assert.equal(log.dropped, 1);
  assert.equal(log.status.at(-1), "reconnecting");
  t.mock.timers.tick(250);
  assert.equal(FakeSocket.made.length, 2, "and a new one opened");
});

test("checkNow pings an open socket at once, and reconnects a closed one", (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  conn.checkNow();
  assert.equal(socket().sent.length, 1, "pinged at once");
  conn.checkNow();
  assert.equal(socket().sent.length, 1, "one ping at a time");
  t.mock.timers.tick(5000);
  assert.equal(log.dropped, 1, "unanswered within 5 s: given up");
  conn.checkNow();
  assert.equal(FakeSocket.made.length, 2, "a closed socket is reconnected at once");
});

test("a close the caller answers false to stays closed until restart", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  FakeSocket.made = [];
  const conn = createConnection(
    { onOpen() {}, onFrame() {}, onClose: () => false, onStatus() {} },
    { url: "ws://test/", WebSocketImpl: FakeSocket },
  );
  conn.connect();
  FakeSocket.made[0].open();
  FakeSocket.made[0].close();
  t.mock.timers.tick(20000);
  assert.equal(FakeSocket.made.length, 1, "no reconnect while signed out");
  conn.restart();
  assert.equal(FakeSocket.made.length, 2);
});

test("the network going away drops the socket at once: calls fail, a reconnect is scheduled", async (t) => {
  const { conn, log, socket } = setup(t);
  socket().open();
  const answer = conn.call("get_user", { user_id: "u1" });
  conn.networkLost();
  await assert.rejects(answer, { code: "UNAVAILABLE" });
  assert.equal(socket().readyState, 3, "the old socket is closed, not left to deliver into nothing");
  assert.equal(log.dropped, 1);
  assert.equal(log.closed, 0, "a close the page asked for is not a close to interpret");
  assert.equal(log.status.at(-1), "reconnecting");
  assert.equal(conn.send({ typing: {} }), false, "nothing is sent into the dropped socket");
  conn.networkLost();
  assert.equal(log.dropped, 1, "with no socket there is nothing more to drop");
  conn.reconnectNow();
  assert.equal(FakeSocket.made.length, 2, "the online event reconnects at once");
});

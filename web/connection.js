// The protocol connection: one WebSocket at "/", JSON frames
// (docs/protocol.md), reconnecting with backoff, and unary calls matched to
// their answers by request_id. Knows nothing of chat.

import { backoffDelay } from "./backoff.js";

/** A call with no answer after this fails (the gateway's own deadline is shorter). */
const CALL_TIMEOUT_MS = 35000;

/**
 * A socket whose other end vanished (a laptop that slept, a network that
 * changed, a gateway host that died) says nothing until TCP gives up,
 * minutes later, and the page would say Connected meanwhile. So when
 * nothing has come for a QUIET_MS, the gateway is pinged (a frame with only
 * a request_id, docs/protocol.md "Ping"), and with no frame at all within
 * PONG_MS the socket is given up as if it had closed.
 */
const QUIET_MS = 25000;
const PONG_MS = 5000;
const PING_PREFIX = "ping:";

/**
 * `hooks`: onOpen(socket) once the upgrade is through (the caller signs in,
 * then says "connected"); onFrame(frame) for frames that answer no call;
 * onDrop() when the connection is forgotten (what was in flight has failed);
 * onClose(event) after a close the page did not ask for, returning false to
 * stay closed (signed out); onStatus(state, text); waitText(text,
 * neverOpened) may reword the countdown. `WebSocketImpl` and `url` are for tests.
 */
export function createConnection(hooks, { url = defaultUrl(), WebSocketImpl = globalThis.WebSocket } = {}) {
  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let reconnectAt = 0;
  let nextRequest = 1;
  const pending = new Map(); // request_id -> {resolve, reject, timer}
  let opened = false; // the current socket got past its upgrade
  let heard = false; // a frame came since the liveness check last looked
  let liveTimer = null;
  let pinged = false; // the liveness check is waiting for a ping's answer
  let neverOpened = 0; // sockets in a row that closed before opening

  const isOpen = () => ws !== null && ws.readyState === WebSocketImpl.OPEN;

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (ws) return;
    hooks.onStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
    const socket = new WebSocketImpl(url);
    ws = socket;
    socket.onopen = () => {
      attempt = 0;
      opened = true;
      expectFrames(QUIET_MS);
      hooks.onOpen(socket);
    };
    socket.onmessage = (ev) => {
      heard = true;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") onFrame(frame);
    };
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      drop();
      if (hooks.onClose(ev) !== false) scheduleReconnect();
    };
  }

  /** Forgets the connection (closing it if still open): what was in flight fails. */
  function drop() {
    const socket = ws;
    ws = null;
    clearTimeout(liveTimer);
    liveTimer = null;
    pinged = false;
    if (socket && socket.readyState <= WebSocketImpl.OPEN) socket.close(1000);
    neverOpened = opened ? 0 : neverOpened + 1;
    opened = false;
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject({ code: "UNAVAILABLE", message: "connection closed" });
    }
    pending.clear();
    hooks.onDrop?.();
  }

  /** No more reconnecting until `restart` (signed out). */
  function stop() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
  }

  /** Starts over at once, dropping the connection there is (a new sign-in). */
  function restart() {
    if (ws) drop();
    attempt = 0;
    connect();
  }

  function onFrame(frame) {
    const rid = frame.request_id;
    // A ping's answer (or, in jwt mode before sign-in, its refusal) has
    // done its work by arriving.
    if (typeof rid === "string" && rid.startsWith(PING_PREFIX)) return;
    if (typeof rid === "string" && pending.has(rid)) {
      const p = pending.get(rid);
      pending.delete(rid);
      clearTimeout(p.timer);
      if (frame.error) p.reject(frame.error);
      else p.resolve(frame);
      return;
    }
    hooks.onFrame(frame);
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    attempt += 1;
    const delay = backoffDelay(attempt);
    reconnectAt = Date.now() + delay;
    reconnectTimer = setTimeout(connect, delay);
    updateReconnectText();
  }

  /** The countdown shown while waiting to reconnect. */
  function updateReconnectText() {
    if (ws || !reconnectTimer) return;
    const secs = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
    let text = secs > 1 ? `Reconnecting in ${secs}s…` : "Reconnecting…";
    if (hooks.waitText) text = hooks.waitText(text, neverOpened);
    if (globalThis.navigator?.onLine === false) hooks.onStatus("offline", "Offline — waiting for the network");
    else hooks.onStatus("reconnecting", text);
  }

  /**
   * Gives the socket up as if it had closed: calls in flight fail, the
   * outbox waits, and a reconnect is scheduled. For a socket that will
   * never report its close: a ping unanswered (checkAlive), or the browser's
   * `offline` event (networkLost): Chromium holds a socket's frames while
   * offline and does not always report its close (a server killed then
   * left a page "Connected" for good), so the page says Offline and the
   * reconnect comes with `online` (reconnectNow) or the backoff.
   */
  function abandon() {
    if (!ws || hooks.mayReconnect?.() === false) return;
    drop();
    scheduleReconnect();
  }

  /** Looks again in `ms` whether a frame came meanwhile (see QUIET_MS). */
  function expectFrames(ms) {
    clearTimeout(liveTimer);
    heard = false;
    liveTimer = setTimeout(checkAlive, ms);
  }

  function checkAlive() {
    if (!isOpen()) return;
    if (heard) {
      pinged = false;
      expectFrames(QUIET_MS);
    } else if (!pinged) ping();
    else abandon(); // the ping went unanswered, and nothing else came
  }

  /** Pings the gateway now, expecting a frame within PONG_MS. */
  function ping() {
    pinged = true;
    ws.send(JSON.stringify({ request_id: `${PING_PREFIX}${nextRequest++}` }));
    expectFrames(PONG_MS);
  }

  /** Skips the backoff (the network is back, the tab is visible again, "Retry now"). */
  function reconnectNow() {
    if (!ws && hooks.mayReconnect?.() !== false) {
      attempt = Math.min(attempt, 1);
      connect();
    }
  }

  function send(frame) {
    if (!isOpen()) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** A unary action; resolves with the answer frame, rejects with {code, message}. */
  function call(action, body) {
    return new Promise((resolve, reject) => {
      const request_id = `q${nextRequest++}`;
      if (!send({ [action]: body, request_id })) {
        reject({ code: "UNAVAILABLE", message: "not connected" });
        return;
      }
      const timer = setTimeout(() => {
        pending.delete(request_id);
        reject({ code: "DEADLINE_EXCEEDED", message: "no answer" });
      }, CALL_TIMEOUT_MS);
      pending.set(request_id, { resolve, reject, timer });
    });
  }

  /**
   * The page is seen again (the tab shown, a laptop woken): a socket that
   * looks open is checked at once with a ping, a closed one reconnected.
   */
  function checkNow() {
    if (!isOpen()) reconnectNow();
    else if (!pinged) ping();
  }

  return { connect, reconnectNow, checkNow, networkLost: abandon, updateReconnectText, isOpen, send, call, drop, stop, restart, isCurrent: (s) => s === ws };
}

function defaultUrl() {
  const loc = globalThis.location;
  return loc ? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/` : "";
}

// The protocol connection: one WebSocket at "/", JSON frames
// (docs/protocol.md), reconnecting with backoff, and unary calls matched to
// their answers by request_id. Knows nothing of chat.

import { backoffDelay } from "./backoff.js";

/** A call with no answer after this fails (the gateway's own deadline is shorter). */
const CALL_TIMEOUT_MS = 35000;

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
      hooks.onOpen(socket);
    };
    socket.onmessage = (ev) => {
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

  return { connect, reconnectNow, updateReconnectText, isOpen, send, call, drop, stop, restart, isCurrent: (s) => s === ws };
}

function defaultUrl() {
  const loc = globalThis.location;
  return loc ? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/` : "";
}

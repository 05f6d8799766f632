// The protocol connection: one WebSocket at "/", JSON frames
// (docs/protocol.md), reconnecting with backoff, and unary calls matched to
// their answers by request_id. Knows nothing of chat.

import { backoffDelay } from "./backoff.js";

/** A call with no answer after this fails (the gateway's own deadline is shorter). */
const CALL_TIMEOUT_MS = 35000;

/**
 * `hooks`: onOpen(), onFrame(frame) for frames that answer no call,
 * onClose(), onStatus(state, text). `WebSocketImpl` and `url` are for tests.
 */
export function createConnection(hooks, { url = defaultUrl(), WebSocketImpl = globalThis.WebSocket } = {}) {
  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let reconnectAt = 0;
  let nextRequest = 1;
  const pending = new Map(); // request_id -> {resolve, reject, timer}

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
      hooks.onStatus("connected", "Connected");
      hooks.onOpen();
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
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      for (const [, p] of pending) {
        clearTimeout(p.timer);
        p.reject({ code: "UNAVAILABLE", message: "connection closed" });
      }
      pending.clear();
      scheduleReconnect();
      hooks.onClose();
    };
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
    if (globalThis.navigator?.onLine === false) hooks.onStatus("offline", "Offline — waiting for the network");
    else hooks.onStatus("reconnecting", secs > 1 ? `Reconnecting in ${secs}s…` : "Reconnecting…");
  }

  /** Skips the backoff (the network is back, the tab is visible again, "Retry now"). */
  function reconnectNow() {
    if (!ws) {
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

  return { connect, reconnectNow, updateReconnectText, isOpen, send, call };
}

function defaultUrl() {
  const loc = globalThis.location;
  return loc ? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/` : "";
}

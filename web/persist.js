// What the client keeps across visits, in localStorage under "wsgate.*" keys.
// A full or disabled storage never stops the chat: values then live in memory only.

export const KEYS = {
  userId: "wsgate.userId",
  userName: "wsgate.userName",
  outbox: "wsgate.outbox",
  rooms: "wsgate.rooms",
  names: "wsgate.names",
  welcomed: "wsgate.welcomed", // the first-visit name prompt was shown
  lastRead: "wsgate.lastRead", // room -> the seq read up to
  drafts: "wsgate.drafts", // room -> the text typed, not sent
  notifyOn: "wsgate.notifyOn",
  notifyRooms: "wsgate.notifyRooms", // rooms whose every message notifies
};

/** JSON values over a Storage-like backend (`getItem`/`setItem`); tests pass a Map-backed one. */
export function createPersist(backend = globalThis.localStorage) {
  return {
    get(key, fallback) {
      try {
        const v = backend.getItem(key);
        return v === null || v === undefined ? fallback : JSON.parse(v);
      } catch {
        return fallback;
      }
    },
    /** Returns whether it was stored (false: storage full or disabled, keep going in memory). */
    set(key, value) {
      try {
        backend.setItem(key, JSON.stringify(value));
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** A Storage-like object in memory (tests, and browsers without storage). */
export function memoryBackend(entries = {}) {
  const m = new Map(Object.entries(entries));
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

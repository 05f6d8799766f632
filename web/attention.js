// What asks for the user's attention, and what the user has read: the read
// position per room (kept across visits and shared by the tabs of a browser),
// the "New messages" divider, the title badge and desktop notifications.
//
// Read = the room shown, the tab visible and the list scrolled to the bottom.
// What arrived while the page was closed counts as unread from the read
// position, also beyond the first history page: seqs have no gaps, so the
// seqs between the read position and the first page are messages too (see
// ARCHITECTURE.md, "The web client"); a room never read before has nothing
// unread from before this visit.

import { KEYS } from "./persist.js";
import { mentionsUser } from "./mention.js";

const READ_SAVE_DELAY_MS = 250;

/**
 * `store`: store.js; `persist`: persist.js; `messages`: message-list.js
 * (the divider, whether the list is at its bottom); `dom.scroller`: the message scroller;
 * `notify(title, options, room)`: shows a desktop notification (a click opens the room).
 */
export function createAttention({ store, persist, messages, dom, notify }) {
  const me = () => store.state.userId;
  const readSeq = new Map(Object.entries(persist.get(KEYS.lastRead, {}) || {}));
  const notifyRooms = new Set(persist.get(KEYS.notifyRooms, []));
  let notifyOn = persist.get(KEYS.notifyOn, false) === true;
  const top = new Map(); // room -> highest seq already counted
  let hiddenHere = 0; // messages in the shown room that arrived while the tab was hidden
  // The shown room's divider: `mark` is the read position it is placed after;
  // `seq`, the message it stands above (it stays until another room is
  // shown); `final` once nothing between the mark and it is still to load.
  let divider = { room: null, mark: null, seq: null, final: false };

  const visible = () => document.visibilityState === "visible";
  const reading = () => store.state.current !== null && visible() && messages.atBottom();
  const othersAfter = (msgs, seq) => msgs.filter((m) => m.sender_id !== me() && m.seq > seq);

  /**
   * Writes the read positions, keeping what another tab read further; a
   * burst of messages read as they come is one write.
   */
  let saveTimer = null;
  function saveRead() {
    if (saveTimer !== null) return;
    saveTimer = setTimeout(flushRead, READ_SAVE_DELAY_MS);
  }
  function flushRead() {
    clearTimeout(saveTimer);
    saveTimer = null;
    mergeStored();
    persist.set(KEYS.lastRead, Object.fromEntries(readSeq));
  }
  function mergeStored() {
    const other = persist.get(KEYS.lastRead, {}) || {};
    for (const [room, seq] of Object.entries(other)) {
      if (typeof seq === "number" && seq > (readSeq.get(room) || 0)) readSeq.set(room, seq);
    }
  }

  /** The shown room is read up to its newest message (when the user sees it). */
  function markRead() {
    const r = store.currentRoom();
    if (!r || !reading() || !r.maxSeq) return;
    if (divider.seq === null) divider.mark = r.maxSeq;
    if ((readSeq.get(r.name) || 0) >= r.maxSeq) return;
    readSeq.set(r.name, r.maxSeq);
    saveRead();
  }

  /**
   * Places the divider before the first message of others after the mark, if
   * any. When more came than the first page holds, the messages right after
   * the mark are not loaded yet: it goes above the oldest one held, and moves
   * up as older pages bring earlier ones.
   */
  function placeDivider(msgs) {
    const r = store.currentRoom();
    if (!r || divider.final || divider.mark === null) return;
    let first = null;
    for (const m of othersAfter(msgs, divider.mark)) if (!first || m.seq < first.seq) first = m;
    if (!first || (divider.seq !== null && first.seq >= divider.seq)) return;
    divider.seq = first.seq;
    divider.final = r.minSeq <= divider.mark + 1;
    messages.setDivider(r.name, first.seq);
  }

  function renderTitle() {
    const n = store.totalUnread() + hiddenHere;
    const title = n ? `(${n}) wsgate chat` : "wsgate chat";
    if (document.title !== title) document.title = title;
  }

  function onShown(room) {
    if (divider.room !== null) messages.setDivider(divider.room, null);
    const r = store.room(room);
    const mark = r ? readSeq.get(room) : undefined;
    divider = { room, mark: mark === undefined ? null : mark, seq: null, final: false };
    if (r) placeDivider([...r.bySeq.values()]);
    markRead();
  }

  /** Stored messages were added to `room` (live, caught up, or an older page). */
  function onMessages(room, added) {
    const r = store.room(room);
    if (!r) return;
    const firstPage = r.lastSeq === null; // caught up from history, not seen live
    const read = readSeq.get(room);
    const from = Math.max(top.get(room) || 0, read || 0);
    top.set(room, Math.max(top.get(room) || 0, r.maxSeq));
    const fresh = firstPage && read === undefined ? [] : othersAfter(added, from);
    const count = firstPage && read !== undefined ? fresh.length + notLoaded(added, from, r.maxSeq) : fresh.length;
    const shown = room === store.state.current;
    if (shown && (firstPage || !reading() || (divider.seq !== null && !divider.final))) placeDivider(added);
    if (count) {
      // Live messages of a room not shown are counted by chat.js.
      if (firstPage && !shown) store.addUnread(room, count);
      if (shown && !visible()) hiddenHere += count;
      if (!firstPage && fresh.length) notifyOf(room, fresh);
    }
    if (shown) markRead();
    renderTitle();
  }

  /**
   * How many seqs after `from`, up to `top`, the page `added` does not hold:
   * messages too (a room's seqs have no gaps), counted as others' without
   * loading them; the own ones among them are over-counted (ARCHITECTURE.md).
   */
  function notLoaded(added, from, top) {
    let held = 0;
    for (const m of added) if (m.seq > from) held += 1;
    return Math.max(0, top - from - held);
  }

  function notifyOf(room, msgs) {
    if (!notifyOn || (visible() && room === store.state.current)) return;
    const self = { id: me(), name: store.state.userName };
    const wanted = msgs.filter((m) => notifyRooms.has(room) || mentionsUser(m.content || "", self));
    if (!wanted.length) return;
    const m = wanted[wanted.length - 1];
    const mention = mentionsUser(m.content || "", self);
    notify(`${mention ? "Mention" : "New message"} in #${room}`, {
      body: `${store.nameOf(m.sender_id)}: ${(m.content || "").slice(0, 200)}`,
      tag: `wsgate:${room}`,
    }, room);
  }

  store.subscribe((ev) => {
    if (ev.type === "current") {
      hiddenHere = 0;
      if (ev.room !== null) onShown(ev.room);
      renderTitle();
    } else if (ev.type === "messages") onMessages(ev.room, ev.added);
    else if (ev.type === "room") renderTitle();
    // A room left keeps its read position: joined again, it goes on from there.
  });

  document.addEventListener("visibilitychange", () => {
    if (visible()) {
      hiddenHere = 0;
      markRead();
    }
    renderTitle();
  });
  dom.scroller.addEventListener("scroll", markRead, { passive: true });
  addEventListener("pagehide", () => saveTimer !== null && flushRead());

  // Another tab read further: take the furthest position of the two.
  addEventListener("storage", (ev) => {
    if (ev.key === KEYS.lastRead) mergeStored();
  });

  return {
    /** Whether desktop notifications are on (the user asked and the browser allows them). */
    notificationsOn: () => notifyOn,
    setNotifications(on) {
      notifyOn = on;
      persist.set(KEYS.notifyOn, on);
    },
    notifiesRoom: (room) => notifyRooms.has(room),
    setNotifyRoom(room, on) {
      if (on) notifyRooms.add(room);
      else notifyRooms.delete(room);
      persist.set(KEYS.notifyRooms, [...notifyRooms]);
    },
    /** The read position of a room (tests and the divider). */
    readSeq: (room) => readSeq.get(room),
  };
}

// The wsgate web chat client: plain ES modules, no build step.
// Protocol: docs/protocol.md (JSON frames over one WebSocket at "/").
//
// Layout (one concept per module):
//   app.js            this file: builds the parts, wires the page's controls
//   connection.js     the WebSocket: reconnect with backoff, calls by request_id
//   session.js        signing in (--auth jwt): auth frames, renewal, the signed-out panel
//   auth.js           tokens: sign-in links, the app's token endpoint, close reasons
//   chat.js           the chat protocol: frames -> store, user actions -> frames
//   store.js          the state (rooms, messages, outbox, names, presence); emits what changed
//   persist.js        what is kept across visits (localStorage)
//   message-list.js   the message list, redrawn at the cost of what changed
//   message-edit.js   editing and deleting the own messages in place
//   room-list.js      the side list of rooms and the unread badges
//   room-directory.js the "Browse rooms" dialog (list_rooms)
//   presence-view.js  who is online and who is typing in the shown room
//   attention.js      read positions, the "New messages" line, the title badge, notifications
//   mention-box.js    @mention completion in the composer
//   mention.js        pure: the @mention syntax
//   format.js         pure helpers: links, days, grouping, typing text
//   backoff.js        retry delays

import { createAttention } from "./attention.js";
import * as auth from "./auth.js";
import { createChat } from "./chat.js";
import { createConnection } from "./connection.js";
import { contentProblem, normalizeRoom, roomProblem, utf8Bytes } from "./format.js";
import { createMentionBox } from "./mention-box.js";
import { createMessageEdit } from "./message-edit.js";
import { createMessageList } from "./message-list.js";
import { KEYS, createPersist } from "./persist.js";
import { createPresenceView } from "./presence-view.js";
import { createRoomDirectory } from "./room-directory.js";
import { createRoomList } from "./room-list.js";
import { createSession } from "./session.js";
import { createStore } from "./store.js";

const $ = (id) => document.getElementById(id);

const persist = createPersist();
// With `--auth jwt` the id is the token's `sub`, learnt when signing in (session.js).
const userId = persist.get(KEYS.userId, null) || crypto.randomUUID();
persist.set(KEYS.userId, userId);
const storedName = persist.get(KEYS.userName, null);
/** A first visit: no name chosen yet (asked once; in jwt mode the token's name is used). */
const firstVisit = !storedName && !persist.get(KEYS.welcomed, false) && auth.lastMode() !== "jwt";
const userName = storedName || `guest-${userId.slice(0, 4)}`;
persist.set(KEYS.userName, userName);

const store = createStore({ persist, userId, userName });

// Of the tabs of this browser, the one holding this lock sends the outbox;
// the others queue into the shared outbox and show it (a message is sent by
// one tab, once). The lock passes on when that tab closes. Without Web Locks
// (an insecure context) every tab sends: the server keeps one per id.
let sendsOutbox = !navigator.locks;
navigator.locks?.request("wsgate.outbox", () => {
  sendsOutbox = true;
  chat.flushOutbox();
  return new Promise(() => {}); // held while the tab lives
});

let announceTimer = null;
/** Read out by screen readers (a short delay lets a burst settle on its last words). */
function announce(text) {
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    $("announcer").textContent = text;
  }, 150);
}

const conn = createConnection({
  onOpen: (socket) => session.signIn(socket),
  onFrame: (frame) => session.onFrame(frame) || chat.onFrame(frame),
  onDrop: () => {
    session.onDrop();
    chat.onClose();
  },
  onClose: (ev) => session.onClose(ev),
  mayReconnect: () => session.mayReconnect(),
  waitText: (text, neverOpened) => session.waitText(text, neverOpened),
  onStatus: (state, text) => store.setConnection(state, text),
});

const chat = createChat({
  store,
  conn,
  announce,
  newId: () => crypto.randomUUID(),
  isVisible: () => document.visibilityState === "visible",
  sendsOutbox: () => sendsOutbox,
});

const session = createSession({ store, conn, onConnected: (signedIn) => chat.onOpen(signedIn), $ });

// ---------- views ----------

createRoomList({ store, dom: { list: $("room-list"), total: $("total-unread") } });
createPresenceView({
  store,
  dom: { presence: $("presence"), count: $("presence-count"), list: $("presence-list"), typing: $("typing") },
});
const messages = createMessageList({
  store,
  dom: {
    scroller: $("scroller"),
    list: $("messages"),
    empty: $("empty"),
    refused: $("refused"),
    note: $("history-note"),
    jump: $("jump"),
  },
  isOpen: conn.isOpen,
  onWantOlder: (room) => chat.loadOlder(room),
  onReplaced: (old, el, focused) => edits.adopt(old, el, focused),
});
const attention = createAttention({
  store,
  persist,
  messages,
  dom: { scroller: $("scroller") },
  notify: (title, options, room) => {
    try {
      const n = new Notification(title, options);
      n.onclick = () => {
        focus();
        if (store.room(room)) chat.selectRoom(room);
        n.close();
      };
    } catch {
      /* notifications refused or unsupported: the title badge still tells */
    }
  },
});
const mentionBox = createMentionBox({
  store,
  input: $("content"),
  list: $("mention-list"),
  announce,
});

// ---------- drafts ----------
// Each room keeps what was typed in it (across reloads): the composer always
// holds the shown room's draft, so Enter sends it to that room only.
const drafts = new Map(Object.entries(persist.get(KEYS.drafts, {}) || {}));
let draftRoom = null; // the room whose draft the composer holds
function saveDraft() {
  if (draftRoom === null) return;
  const text = $("content").value;
  if ((drafts.get(draftRoom) || "") === text) return;
  if (text) drafts.set(draftRoom, text);
  else drafts.delete(draftRoom);
  // Another tab's drafts of other rooms stay.
  const stored = persist.get(KEYS.drafts, {}) || {};
  if (text) stored[draftRoom] = text;
  else delete stored[draftRoom];
  persist.set(KEYS.drafts, stored);
}
function loadDraft(room) {
  mentionBox.close();
  draftRoom = room;
  const text = room === null ? "" : drafts.get(room) || "";
  if ($("content").value !== text) $("content").value = text;
  $("content").dispatchEvent(new Event("input-draft"));
}

// ---------- notifications ----------

function renderNotify() {
  const supported = typeof Notification !== "undefined";
  const btn = $("notify");
  btn.hidden = !supported;
  if (!supported) return;
  const on = attention.notificationsOn() && Notification.permission === "granted";
  btn.setAttribute("aria-pressed", String(on));
  btn.textContent = on ? "Notifications on" : "Turn on notifications";
  $("notify-note").textContent =
    Notification.permission === "denied" ? "Notifications are blocked in this browser's settings." : "";
  const r = store.currentRoom();
  const room = $("notify-room");
  room.hidden = !r || !on;
  if (r) {
    const all = attention.notifiesRoom(r.name);
    room.setAttribute("aria-pressed", String(all));
    room.textContent = all ? "Notifying every message" : "Notify every message";
    room.title = all ? `Only mentions of you in #${r.name} notify` : `Every message in #${r.name} notifies`;
  }
}

const directory = createRoomDirectory({
  conn,
  onJoin: (name) => {
    chat.joinRoom(name);
    closeDrawer();
    $("content").focus();
  },
  dom: {
    dialog: $("directory"),
    filter: $("directory-filter"),
    list: $("directory-list"),
    status: $("directory-status"),
    more: $("directory-more"),
    close: $("directory-close"),
  },
});

const edits = createMessageEdit({ chat, room: () => store.state.current, contentLimit: () => store.state.limits.content });

/** The room header and the composer follow the shown room. */
function renderHead() {
  const r = store.currentRoom();
  $("room-title").textContent = r ? `# ${r.name}` : "No room";
  $("room-title").title = r ? `#${r.name}` : ""; // the full name: a long one is cut with an ellipsis
  $("leave").hidden = !r;
  renderRefused();
  $("content").placeholder = r ? `Message #${r.name}` : "Join a room to send messages";
  const hash = r ? `#${encodeURIComponent(r.name)}` : "";
  if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname + location.search);
}

let refusedSaid = null;
/** A room the server refused takes no messages; the pane says why, and it is read out once. */
function renderRefused() {
  const r = store.currentRoom();
  const off = !r || r.error !== null;
  $("content").disabled = off;
  $("send-btn").disabled = off;
  const said = r && r.error !== null ? `Could not open #${r.name}: ${r.error}` : null;
  if (said !== null && said !== refusedSaid) announce(said);
  refusedSaid = said;
}

/** The connection state, in the sidebar footer, the header and the banner; changes are read out. */
function renderStatus() {
  const { state, text, prev } = store.state.connection;
  // Not a live region: the countdown changes every second; the change of state is announced once below.
  const banner = $("conn-banner");
  banner.hidden = state === "connected" || state === "connecting" || state === "signed-out";
  banner.dataset.state = state;
  if ($("conn-banner-text").textContent !== text) $("conn-banner-text").textContent = text;
  for (const el of [$("status"), $("head-status")]) el.dataset.state = state;
  $("status-text").textContent = text;
  $("head-status-text").textContent = text;
  $("head-status").title = text;
  if (prev && state !== prev) {
    const said = { connected: "Connected", offline: "Offline", "signed-out": "Signed out" };
    announce(said[state] || "Connection lost, reconnecting");
  }
  $("retry").hidden = state !== "reconnecting" && state !== "offline";
}

store.subscribe((ev) => {
  if (ev.type === "current") {
    saveDraft();
    loadDraft(ev.room);
    renderHead();
    renderNotify();
    closeDrawer();
  } else if (ev.type === "room" && ev.room === store.state.current) renderRefused();
  else if (ev.type === "connection") renderStatus();
  else if (ev.type === "limits") renderCount();
  else if ((ev.type === "name" && ev.id === store.state.userId) || ev.type === "identity") {
    $("name").value = store.state.userName;
    // Signed in: the token's name is used, nothing to ask.
    if (ev.type === "identity") endWelcome();
  }
});

// Another tab of this browser changed what the tabs share.
addEventListener("storage", (ev) => {
  if (ev.key === KEYS.outbox) {
    store.syncOutbox();
    chat.flushOutbox();
  } else if (ev.key === KEYS.rooms) {
    const list = persist.get(KEYS.rooms, []);
    if (!Array.isArray(list)) return;
    for (const name of list) if (typeof name === "string" && name) chat.joinRoom(name, false);
    // A room refused here is not in the stored list, and stays (marked) until removed here.
    for (const r of [...store.state.rooms.values()]) if (!list.includes(r.name) && r.error === null) chat.leaveRoom(r.name);
  } else if (ev.key === KEYS.drafts) {
    const stored = persist.get(KEYS.drafts, {}) || {};
    for (const room of [...drafts.keys()]) if (room !== draftRoom && !(room in stored)) drafts.delete(room);
    for (const [room, text] of Object.entries(stored)) if (room !== draftRoom) drafts.set(room, String(text));
  }
});

setInterval(() => conn.updateReconnectText(), 1000);
addEventListener("online", conn.reconnectNow);
addEventListener("offline", conn.networkLost);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") conn.checkNow();
});

// ---------- controls ----------

function openDrawer() {
  document.body.classList.add("drawer-open");
  $("scrim").hidden = false;
  $("toggle-rooms").setAttribute("aria-expanded", "true");
  $("join-room").focus();
}
function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  $("scrim").hidden = true;
  $("toggle-rooms").setAttribute("aria-expanded", "false");
}

// ---------- first visit ----------

function startWelcome() {
  $("welcome").hidden = false;
  $("welcome-name").value = store.state.userName;
  $("welcome-name").focus();
  $("welcome-name").select();
}
function endWelcome() {
  persist.set(KEYS.welcomed, true);
  if ($("welcome").hidden) return;
  $("welcome").hidden = true;
  $("content").focus();
}

// ---------- composer limits ----------

/** Shown from this share of the limit on (UTF-8 bytes, as the server counts). */
const COUNT_FROM = 0.8;
function renderCount(refused = null) {
  const n = utf8Bytes($("content").value);
  const el = $("composer-count");
  const max = store.state.limits.content;
  const over = n > max;
  const text = refused || (n >= max * COUNT_FROM ? `${n} / ${max} bytes` : "");
  if (el.textContent !== text) el.textContent = text;
  el.classList.toggle("over", over);
  $("content").setAttribute("aria-invalid", String(over));
}

function roomFromHash() {
  try {
    return normalizeRoom(decodeURIComponent(location.hash.slice(1)));
  } catch {
    return "";
  }
}

function wire() {
  $("name").value = store.state.userName;
  $("profile").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("name").value.trim();
    const note = $("name-note");
    if (!name) return;
    note.textContent = "Saving…";
    note.className = "note";
    try {
      await chat.setName(name);
      $("name").value = store.state.userName;
      note.textContent = "Saved";
    } catch (e) {
      note.textContent = e.code === "UNAVAILABLE" ? "Not connected — try again soon" : e.message || e.code;
      note.className = "note error";
    }
  });

  $("welcome").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("welcome-name").value.trim();
    if (!name) return;
    try {
      await chat.setName(name);
    } catch (e) {
      if (e.code !== "UNAVAILABLE") {
        $("welcome-note").textContent = e.message || e.code;
        $("welcome-note").className = "note error";
        return;
      }
      // Not connected yet: kept here, stored by the next connection (onOpen sends it).
      store.setUserName(name);
    }
    $("name").value = store.state.userName;
    endWelcome();
  });

  $("join").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = normalizeRoom($("join-room").value);
    const problem = roomProblem(name, store.state.limits.id);
    $("join-note").textContent = problem || "";
    $("join-note").className = problem ? "note error" : "note";
    $("join-room").setAttribute("aria-invalid", String(!!problem));
    if (problem) return; // the name stays, to be shortened
    $("join-room").value = "";
    chat.joinRoom(name);
    $("content").focus();
  });

  // The skip link must not touch the hash: the hash names the room.
  document.querySelector(".skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("content").focus();
  });
  $("leave").addEventListener("click", () => store.state.current !== null && chat.leaveRoom(store.state.current));
  $("retry").addEventListener("click", conn.reconnectNow);
  $("refused-retry").addEventListener("click", () => store.state.current !== null && chat.retryRoom(store.state.current));
  $("refused-remove").addEventListener("click", () => {
    if (store.state.current !== null) chat.leaveRoom(store.state.current);
    $("content").focus();
  });
  $("browse-rooms").addEventListener("click", () => directory.open());
  $("banner-retry").addEventListener("click", () => {
    conn.reconnectNow();
    chat.retryNow();
  });
  $("toggle-rooms").addEventListener("click", () =>
    document.body.classList.contains("drawer-open") ? closeDrawer() : openDrawer(),
  );
  $("scrim").addEventListener("click", closeDrawer);
  // The online list is a <details> popover: a click elsewhere or Escape closes it.
  document.addEventListener("click", (ev) => {
    if ($("presence").open && !$("presence").contains(ev.target)) $("presence").open = false;
  });
  $("presence").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && $("presence").open) {
      $("presence").open = false;
      $("presence").querySelector("summary").focus();
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && document.body.classList.contains("drawer-open")) {
      closeDrawer();
      $("toggle-rooms").focus();
    }
  });
  $("room-list").addEventListener("click", (ev) => {
    const a = ev.target.closest("a.room");
    if (!a) return;
    ev.preventDefault();
    chat.selectRoom(decodeURIComponent(a.getAttribute("href").slice(1)));
    $("content").focus();
  });
  addEventListener("hashchange", () => {
    // A sign-in link opened in this tab.
    if (auth.takeTokenFromUrl()) session.signInAgain();
    const name = roomFromHash();
    if (name && name !== store.state.current) chat.joinRoom(name);
  });

  const content = $("content");
  const grow = () => {
    content.style.height = "auto";
    content.style.height = `${Math.min(content.scrollHeight, 200)}px`;
  };
  content.addEventListener("input", grow);
  content.addEventListener("input-draft", grow);
  content.addEventListener("input", () => chat.noteTyping(content.value));
  content.addEventListener("input", () => renderCount());
  content.addEventListener("input", saveDraft);
  content.addEventListener("keydown", (ev) => {
    if (mentionBox.onKey(ev)) return;
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("send").requestSubmit();
    }
  });
  $("send").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = content.value.replace(/^\s*\n|\s+$/g, "");
    if (!text.trim() || store.state.current === null || draftRoom !== store.state.current) return;
    // Refused here, the text kept: the server would refuse it for good.
    const problem = contentProblem(text, store.state.limits.content);
    if (problem) {
      renderCount(problem);
      announce(problem); // the counter is not a live region: it changes with every key
      return;
    }
    content.value = "";
    saveDraft();
    grow();
    renderCount();
    chat.send(text);
  });

  // Retry and Discard on a message that was not sent (the list is replaced per room: listen above it).
  $("scroller").addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn || edits.onAction(btn)) return;
    const id = btn.closest("li").dataset.id;
    if (btn.dataset.action === "retry") chat.retry(id);
    else chat.discard(id);
  });
  $("jump").addEventListener("click", () => $("content").focus());

  $("notify").addEventListener("click", async () => {
    if (attention.notificationsOn() && Notification.permission === "granted") {
      attention.setNotifications(false);
    } else {
      const p = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
      attention.setNotifications(p === "granted");
    }
    renderNotify();
  });
  $("notify-room").addEventListener("click", () => {
    const r = store.currentRoom();
    if (!r) return;
    attention.setNotifyRoom(r.name, !attention.notifiesRoom(r.name));
    renderNotify();
  });
}

function start() {
  wire();
  renderStatus();
  renderNotify();
  auth.takeTokenFromUrl(); // before the fragment is read as a room name
  // Rooms: the saved list, the rooms of unsent messages, and the one in the URL.
  for (const name of persist.get(KEYS.rooms, [])) if (typeof name === "string" && name) store.addRoom(name);
  for (const o of store.state.outbox) store.addRoom(o.room_id);
  if (!store.state.rooms.size && !roomFromHash()) store.addRoom("general");
  const wanted = roomFromHash() || store.state.rooms.keys().next().value;
  store.addRoom(wanted);
  chat.selectRoom(wanted);
  if (store.state.current === null) messages.show(null);
  if (firstVisit) startWelcome();
  else persist.set(KEYS.welcomed, true);
  conn.connect();
}

start();

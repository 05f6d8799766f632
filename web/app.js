// The wsgate web chat client: plain ES module, no build step.
// Protocol: docs/protocol.md (JSON frames over one WebSocket at "/").

import * as auth from "./auth.js";

const $ = (id) => document.getElementById(id);

/** The "you" badge beside the user's own name. */
function youBadge() {
  const you = document.createElement("span");
  you.className = "you";
  you.textContent = "you";
  return you;
}

const PAGE = 50; // history page size
const CATCH_UP_PAGE = 200;
const GROUP_GAP_MS = 5 * 60 * 1000;
const RESEND_AFTER_MS = 10000;

// ---------- persisted state ----------

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(key);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      /* storage full or disabled: keep going in memory */
    }
  },
};

// With `--auth jwt` the id is the token's `sub`, learnt when signing in.
let userId = store.get("wsgate.userId", null) || crypto.randomUUID();
store.set("wsgate.userId", userId);
let userName = store.get("wsgate.userName", null) || `guest-${userId.slice(0, 4)}`;
store.set("wsgate.userName", userName);

/** Messages typed but not yet confirmed: {id, room_id, sender, content, created, state, error}. */
let outbox = store.get("wsgate.outbox", []).filter((m) => m && m.id && m.room_id);
const saveOutbox = () => store.set("wsgate.outbox", outbox);

/** Room name -> state. The order of the Map is the order of the side list. */
const rooms = new Map();
let current = null;

function roomState(name) {
  let r = rooms.get(name);
  if (!r) {
    r = {
      name,
      bySeq: new Map(), // seq (number) -> message
      lastSeq: null, // highest seq up to which nothing is missing; null = never loaded
      hasOlder: true,
      loadingOlder: false,
      catching: false,
      catchAgain: false,
      retryTimer: null,
      retryAttempt: 0,
      unread: 0,
      scrollTop: null,
      online: null, // Set of user ids from the last presence snapshot; null = not known yet
      typing: new Map(), // user id -> expiry timer
    };
    rooms.set(name, r);
  }
  return r;
}
const saveRooms = () => store.set("wsgate.rooms", [...rooms.keys()]);

// ---------- names ----------

/** Display names by user id, kept across visits so they show at once (even offline). */
const names = new Map(Object.entries(store.get("wsgate.names", {})));
names.set(userId, userName);
const fresh = new Map(); // id -> when it was looked up on the current connection
const NAME_TTL_MS = 2 * 60 * 1000;
const lookingUp = new Set();
let saveNamesTimer = null;
function saveNames() {
  clearTimeout(saveNamesTimer);
  saveNamesTimer = setTimeout(() => {
    const entries = [...names.entries()].slice(-500);
    store.set("wsgate.names", Object.fromEntries(entries));
  }, 500);
}

function nameOf(id) {
  if (id === userId) return userName;
  const stale = !fresh.has(id) || Date.now() - fresh.get(id) > NAME_TTL_MS;
  if (stale && !lookingUp.has(id) && isOpen()) {
    lookingUp.add(id);
    call("get_user", { user_id: id })
      .then((a) => learnName(id, a.user.name || id))
      .catch((e) => {
        if (e.code === "NOT_FOUND") learnName(id, id);
      })
      .finally(() => lookingUp.delete(id));
  }
  if (names.has(id)) return names.get(id);
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

/**
 * Records a looked-up name. A user seen the moment they arrive may not have
 * stored their name yet (it travels apart from their join), so an id without
 * a name is asked again soon, then less and less often, instead of showing
 * as an id until the names go stale.
 */
const nameRetries = new Map(); // id -> lookups that found no name yet
function learnName(id, name) {
  fresh.set(id, Date.now());
  if (name === id) {
    const n = nameRetries.get(id) || 0;
    nameRetries.set(id, n + 1);
    setTimeout(() => {
      fresh.delete(id);
      scheduleRender();
    }, Math.min(NAME_TTL_MS, 1000 * 2 ** n));
  } else {
    nameRetries.delete(id);
  }
  if (names.get(id) !== name) {
    names.set(id, name);
    saveNames();
    scheduleRender();
  }
}

// ---------- connection ----------

let ws = null;
let attempt = 0;
let reconnectTimer = null;
let reconnectAt = 0;
let nextRequest = 1;
const pending = new Map(); // request_id -> {resolve, reject, timer}

let resendAfterCatchUp = false; // the upstream was lost: resend the outbox once it is back
const isOpen = () => ws && ws.readyState === WebSocket.OPEN;

let opened = false; // the current socket got past its upgrade
let neverOpened = 0; // sockets in a row that closed before opening

let lastState = null;
function setStatus(state, text) {
  for (const el of [$("status"), $("head-status")]) el.dataset.state = state;
  $("status-text").textContent = text;
  $("head-status-text").textContent = text;
  $("head-status").title = text;
  if (state !== lastState && lastState !== null) {
    const said = { connected: "Connected", offline: "Offline", "signed-out": "Signed out" };
    announce(said[state] || "Connection lost, reconnecting");
  }
  lastState = state;
  $("retry").hidden = state !== "reconnecting" && state !== "offline";
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (ws) return;
  setStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  const socket = new WebSocket(url);
  ws = socket;
  socket.onopen = () => {
    attempt = 0;
    opened = true;
    signIn(socket);
  };
  socket.onmessage = (ev) => {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    onFrame(frame);
  };
  socket.onclose = (ev) => {
    if (ws !== socket) return;
    dropConnection();
    const problem = auth.signInProblem(ev.code, ev.reason);
    if (problem) onSignedOut(problem);
    else if (!signedOut) scheduleReconnect();
  };
}

/** Forgets the connection (closing it if still open): what was in flight fails, rooms await a re-join. */
function dropConnection() {
  const socket = ws;
  ws = null;
  if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  neverOpened = opened ? 0 : neverOpened + 1;
  opened = false;
  session = null;
  clearTimeout(renewTimer);
  for (const [, p] of pending) {
    clearTimeout(p.timer);
    p.reject({ code: "UNAVAILABLE", message: "connection closed" });
  }
  pending.clear();
  for (const r of rooms.values()) {
    r.catching = false;
    r.online = null; // a snapshot comes again after the re-join
    clearTyping(r);
  }
  scheduleRender();
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  attempt += 1;
  // Exponential backoff with jitter: 250 ms doubling to 10 s, times 0.5..1.
  const base = Math.min(10000, 250 * 2 ** (attempt - 1));
  const delay = Math.round(base * (0.5 + Math.random() / 2));
  reconnectAt = Date.now() + delay;
  const offline = navigator.onLine === false;
  reconnectTimer = setTimeout(connect, delay);
  updateReconnectText(offline);
}

function updateReconnectText(offline = navigator.onLine === false) {
  if (ws || !reconnectTimer) return;
  const secs = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
  let text = secs > 1 ? `Reconnecting in ${secs}s…` : "Reconnecting…";
  // A refused upgrade (401: a bad cookie) looks like any failed connection to a page.
  if (authMode === "jwt" && neverOpened >= 2) text = `Can't connect (has your sign-in expired?) ${text}`;
  if (offline) setStatus("offline", "Offline — waiting for the network");
  else setStatus("reconnecting", text);
}
setInterval(() => updateReconnectText(), 1000);

function reconnectNow() {
  if (!ws && !signedOut) {
    attempt = Math.min(attempt, 1);
    connect();
  }
}
addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

function sendFrame(frame) {
  if (!isOpen()) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

/** A unary action; resolves with the answer frame, rejects with {code, message}. */
function call(action, body) {
  return new Promise((resolve, reject) => {
    const request_id = `q${nextRequest++}`;
    if (!sendFrame({ [action]: body, request_id })) {
      reject({ code: "UNAVAILABLE", message: "not connected" });
      return;
    }
    const timer = setTimeout(() => {
      pending.delete(request_id);
      reject({ code: "DEADLINE_EXCEEDED", message: "no answer" });
    }, 35000);
    pending.set(request_id, { resolve, reject, timer });
  });
}

// ---------- signing in (--auth jwt) ----------

/** "none" or "jwt", as the gateway showed it (before the first sign-in: last visit's). */
let authMode = auth.lastMode();
/** Who the gateway says this connection is, {sub, exp, since}; null in none mode. */
let session = null;
let renewTimer = null;
let renewFailures = 0;
/** Why the page is signed out; while set, nothing reconnects until the user signs in again. */
let signedOut = null;
/** With a token, the server holds the display name (seeded by the token's name claim). */
let ownNameKnown = false;

/**
 * Says who this connection is, then starts the session. A token the page
 * holds goes in the first frame. Then comes a harmless call: by its answer
 * the gateway has either said who we are (in jwt mode its `auth` frame
 * always comes first) or said nothing (none mode), or refused us.
 */
async function signIn(socket) {
  const token = auth.storedToken();
  if (token) sendFrame({ auth: { token } });
  try {
    await call("get_user", { user_id: userId });
  } catch (e) {
    if (ws !== socket) return; // closed meanwhile: the close says why
    if (e.code === "UNAUTHENTICATED") {
      dropConnection();
      onSignedOut({ text: "This chat needs you to sign in." });
      return;
    }
    // NOT_FOUND (a new user) or another error: an answer all the same.
  }
  if (ws !== socket) return;
  authMode = session ? "jwt" : "none";
  auth.rememberMode(authMode);
  setStatus("connected", "Connected");
  onConnected();
}

/** The gateway's `{"auth": {"sub", "exp"}}`: at sign-in and after each renewal. */
function onAuth(a) {
  if (!a || typeof a.sub !== "string" || !a.sub || typeof a.exp !== "number") return;
  session = { sub: a.sub, exp: a.exp, since: Date.now() };
  renewFailures = 0;
  if (a.sub !== userId) adoptIdentity(a.sub);
  scheduleRenewal();
  renderSignedIn();
}

function adoptIdentity(sub) {
  userId = sub;
  store.set("wsgate.userId", sub);
  // What another user of this browser typed is not sent as this one.
  outbox = outbox.filter((o) => !o.sender || o.sender === sub);
  saveOutbox();
  ownNameKnown = false;
  setOwnName(names.get(sub) || auth.claimsOf(auth.storedToken())?.name || sub);
}

function setOwnName(name) {
  userName = name;
  names.set(userId, name);
  store.set("wsgate.userName", name);
  $("name").value = name;
  scheduleRender();
}

/**
 * Asks the server for this user's name (jwt mode). A first-time user is
 * registered by its first join, a moment after it is answered: until then
 * there is no name, and it is asked again after 1, 2 and 4 s.
 */
function learnOwnName(tries = 0) {
  if (ownNameKnown) return;
  call("get_user", { user_id: userId })
    .then((a) => {
      if (!a.user.name) throw { code: "NOT_FOUND" };
      ownNameKnown = true;
      setOwnName(a.user.name);
    })
    .catch((e) => {
      if (e.code === "NOT_FOUND" && tries < 3) setTimeout(() => isOpen() && learnOwnName(tries + 1), 1000 * 2 ** tries);
    });
}

function scheduleRenewal() {
  clearTimeout(renewTimer);
  if (session && auth.canRenew()) renewTimer = setTimeout(renew, auth.renewDelay(session.exp, session.since));
}

/** Fetches a fresh token from the app and presents it; the gateway answers a new `auth` frame. */
async function renew() {
  try {
    const token = await auth.fetchToken();
    if (!sendFrame({ auth: { token } })) return; // the next connection presents it
  } catch (e) {
    console.warn("wsgate: could not renew the sign-in:", e.message);
    retryRenewal();
  }
}

/** Tries again while the session lasts: 5 s, 10 s, ... but never past half the time left. */
function retryRenewal() {
  renewFailures += 1;
  const left = session ? session.exp * 1000 - Date.now() : 0;
  if (left > 0) renewTimer = setTimeout(renew, Math.min(left / 2, 5000 * renewFailures));
}

function onSignedOut(problem) {
  if (problem.expired && auth.canRenew() && !problem.retried) {
    // The tab may have slept through its renewal: the app may still have a token for us.
    auth
      .fetchToken()
      .then(() => connect())
      .catch(() => onSignedOut({ ...problem, retried: true }));
    return;
  }
  auth.forgetToken(); // refused or expired: presenting it again would fail again
  signedOut = problem.text;
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  setStatus("signed-out", "Signed out");
  renderSignedIn();
}

/** Starts over with whatever token there is now (a new sign-in link, or one from the app). */
function signInAgain() {
  signedOut = null;
  renderSignedIn();
  if (ws) dropConnection();
  attempt = 0;
  connect();
}

function signOut() {
  auth.forgetToken();
  dropConnection();
  onSignedOut({ text: "You signed out." });
}

function renderSignedIn() {
  $("signed-in").hidden = !session;
  if (session) {
    $("signed-in-sub").textContent = session.sub;
    const until = timeFmt.format(new Date(session.exp * 1000));
    $("signed-in-until").textContent = auth.canRenew() ? "" : ` until ${until}`;
    $("sign-out").hidden = !auth.storedToken(); // an app's cookie is the app's to clear
  }
  $("signin").hidden = !signedOut;
  document.body.classList.toggle("signed-out", !!signedOut);
  if (signedOut) $("signin-text").textContent = signedOut;
}

function onConnected() {
  // Refresh names: others may have renamed themselves meanwhile.
  fresh.clear();
  scheduleRender();
  if (session) learnOwnName();
  else call("set_user_name", { user_id: userId, name: userName }).catch(() => {});
  flushOutbox(true);
  for (const r of rooms.values()) enterRoom(r);
}

function onFrame(frame) {
  const rid = frame.request_id;
  if (frame.error) {
    onError(frame.error, rid);
    return;
  }
  if (rid && pending.has(rid)) {
    const p = pending.get(rid);
    pending.delete(rid);
    clearTimeout(p.timer);
    p.resolve(frame);
    return;
  }
  if (frame.chat_message) onChatMessage(frame.chat_message);
  else if (frame.presence) {
    onPresence(frame.presence);
    // A snapshot nobody asked for: the gateway re-opened the stream (after a
    // renewal, or the service coming back), and what was said meanwhile
    // reaches us only through history.
    const r = frame.presence.snapshot && rooms.get(frame.presence.room_id);
    if (r) catchUp(r);
  } else if (frame.typing) onTyping(frame.typing);
  else if (frame.auth) onAuth(frame.auth);
}

// ---------- presence & typing ----------

const TYPING_SHOW_MS = 5000;
const TYPING_SEND_EVERY_MS = 3000;

function onPresence(p) {
  const r = rooms.get(p.room_id);
  if (!r) return;
  const online = Array.isArray(p.online) ? p.online : [];
  const offline = Array.isArray(p.offline) ? p.offline : [];
  if (p.snapshot || !r.online) r.online = new Set(online);
  else for (const id of online) r.online.add(id);
  for (const id of offline) {
    r.online.delete(id);
    stopTyping(r, id);
  }
  if (r.name === current) renderPresence();
}

function onTyping(t) {
  const r = rooms.get(t.room_id);
  if (!r || !t.user_id || t.user_id === userId) return;
  clearTimeout(r.typing.get(t.user_id));
  r.typing.set(
    t.user_id,
    setTimeout(() => stopTyping(r, t.user_id), TYPING_SHOW_MS),
  );
  if (r.name === current) renderTyping();
}

function stopTyping(r, id) {
  if (!r.typing.has(id)) return;
  clearTimeout(r.typing.get(id));
  r.typing.delete(id);
  if (r.name === current) renderTyping();
}

function clearTyping(r) {
  for (const timer of r.typing.values()) clearTimeout(timer);
  r.typing.clear();
}

let lastTypingSent = { room: null, at: 0 };
/** Tells the room its user is typing: at most once every 3 s, never for an empty box. */
function noteTyping(text) {
  if (!current || !text.trim() || !isOpen()) return;
  const now = Date.now();
  if (lastTypingSent.room === current && now - lastTypingSent.at < TYPING_SEND_EVERY_MS) return;
  lastTypingSent = { room: current, at: now };
  sendFrame({ typing: { room_id: current, user_id: userId } });
}

/** Display names of a set of ids, the own user first, then alphabetical. */
function sortedNames(ids) {
  return [...ids]
    .map((id) => ({ id, name: nameOf(id) }))
    .sort((a, b) => (b.id === userId) - (a.id === userId) || a.name.localeCompare(b.name));
}

function renderPresence() {
  const r = current ? rooms.get(current) : null;
  const box = $("presence");
  if (!r || !r.online) {
    box.hidden = true;
    box.open = false;
    return;
  }
  box.hidden = false;
  const people = sortedNames(r.online);
  $("presence-count").textContent = `${people.length} online`;
  const summary = box.querySelector("summary");
  const all = people.map((p) => (p.id === userId ? `${p.name} (you)` : p.name));
  summary.title = all.join(", ");
  summary.setAttribute("aria-label", `${people.length} online: ${all.join(", ")}`);
  const frag = document.createDocumentFragment();
  for (const p of people) {
    const li = document.createElement("li");
    li.dataset.userId = p.id;
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "presence-name";
    label.textContent = p.name;
    li.append(dot, label);
    if (p.id === userId) li.append(youBadge());
    frag.append(li);
  }
  $("presence-list").replaceChildren(frag);
}

function renderTyping() {
  const r = current ? rooms.get(current) : null;
  const ids = r ? [...r.typing.keys()] : [];
  const who = ids.map(nameOf).sort((a, b) => a.localeCompare(b));
  let text = "";
  if (who.length === 1) text = `${who[0]} is typing…`;
  else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
  else if (who.length > 2) text = "Several people are typing…";
  const el = $("typing");
  if (el.textContent !== text) el.textContent = text; // unchanged text is not announced again
}

function onError(error, rid) {
  if (rid && pending.has(rid)) {
    const p = pending.get(rid);
    pending.delete(rid);
    clearTimeout(p.timer);
    p.reject(error);
    return;
  }
  if (error.code === "UNAUTHENTICATED" && !rid && session) {
    // A renewal the gateway refused: the current token holds until it expires.
    retryRenewal();
    return;
  }
  if (rid && rid.startsWith("s:")) {
    const item = outbox.find((m) => m.id === rid.slice(2));
    if (item && error.code !== "UNAVAILABLE") {
      item.state = "failed";
      item.error = error.message || error.code;
      saveOutbox();
      scheduleRender();
      return;
    }
  }
  if (error.code === "UNAVAILABLE" || error.code === "RESOURCE_EXHAUSTED") {
    // The gateway lost its upstream but kept us: fetch what we miss once it
    // is back, and resend what is unconfirmed (deduplicated by id).
    setStatus("reconnecting", "Server unavailable — catching up…");
    resendAfterCatchUp = true;
    for (const r of rooms.values()) scheduleCatchUp(r);
  }
}

// ---------- messages & history ----------

/** Inserts a stored message; returns true if it was new. */
function insert(r, m) {
  const seq = Number(m.seq);
  if (!Number.isFinite(seq) || seq <= 0 || r.bySeq.has(seq)) return false;
  r.bySeq.set(seq, { ...m, seq });
  return true;
}

function advance(r) {
  if (r.lastSeq === null) return;
  while (r.bySeq.has(r.lastSeq + 1)) r.lastSeq += 1;
}

function maxSeq(r) {
  let max = 0;
  for (const q of r.bySeq.keys()) if (q > max) max = q;
  return max;
}
function minSeq(r) {
  let min = Infinity;
  for (const q of r.bySeq.keys()) if (q < min) min = q;
  return min === Infinity ? 0 : min;
}

/**
 * Joins the room on the server, then catches up. The join's answer (the
 * presence snapshot, with our request_id) comes once the server counts this
 * connection in the room: every message stored after it arrives live, and the
 * history call made after it covers everything before, so nothing falls
 * between the two.
 */
function enterRoom(r) {
  call("join_room", { room_id: r.name, user_id: userId })
    .then((f) => {
      if (f.presence) onPresence(f.presence);
    })
    // Closed meanwhile: the re-join after reconnecting does it again.
    .catch(() => {})
    .finally(() => {
      if (isOpen() && rooms.get(r.name) === r) catchUp(r);
    });
}

function confirmOutbox(m) {
  if (m.sender_id !== userId) return;
  const i = outbox.findIndex((o) => o.id === m.id && o.room_id === m.room_id);
  if (i >= 0) {
    outbox.splice(i, 1);
    saveOutbox();
  }
}

function onChatMessage(m) {
  confirmOutbox(m);
  const r = rooms.get(m.room_id);
  if (r) stopTyping(r, m.sender_id);
  if (!r) {
    scheduleRender();
    return;
  }
  if (!insert(r, m)) {
    scheduleRender();
    return;
  }
  noteNew(r, [m]);
  advance(r);
  if (r.lastSeq !== null && maxSeq(r) > r.lastSeq) catchUp(r); // a gap
  scheduleRender(r.name === current ? "append" : null);
}

function noteNew(r, msgs) {
  const others = msgs.filter((m) => m.sender_id !== userId);
  if (!others.length) return;
  const visible = r.name === current && document.visibilityState === "visible";
  if (!visible) r.unread += others.length;
  const last = others[others.length - 1];
  if (r.name === current) announce(`${nameOf(last.sender_id)}: ${last.content.slice(0, 140)}`);
  else announce(`New message in ${r.name}`);
}

/** Brings a room up to date: its last page the first time, else everything after lastSeq. */
async function catchUp(r) {
  if (r.catching) {
    r.catchAgain = true;
    return;
  }
  if (!isOpen()) return;
  r.catching = true;
  try {
    do {
      r.catchAgain = false;
      if (r.lastSeq === null) {
        const a = await call("get_chat_history", { room_id: r.name, limit: PAGE, before_seq: 0 });
        const h = a.chat_history;
        for (const m of h.messages) insert(r, m);
        r.hasOlder = h.has_more;
        r.lastSeq = maxSeq(r);
        scheduleRender(r.name === current ? "bottom" : null);
      } else {
        for (;;) {
          const a = await call("get_chat_history", {
            room_id: r.name,
            limit: CATCH_UP_PAGE,
            after_seq: r.lastSeq,
          });
          const h = a.chat_history;
          const fresh = h.messages.filter((m) => insert(r, m));
          for (const m of h.messages) confirmOutbox(m);
          if (fresh.length) noteNew(r, fresh);
          if (h.messages.length) r.lastSeq = Math.max(r.lastSeq, ...h.messages.map((m) => Number(m.seq)));
          advance(r);
          scheduleRender(r.name === current ? "append" : null);
          if (!h.has_more) break;
        }
        if (maxSeq(r) > r.lastSeq) r.lastSeq = maxSeq(r);
      }
    } while (r.catchAgain);
    r.retryAttempt = 0;
    if (isOpen()) setStatus("connected", "Connected");
    flushOutbox(resendAfterCatchUp);
    resendAfterCatchUp = false;
  } catch (e) {
    if (e.code === "INVALID_ARGUMENT") return; // a room name the server refuses
    scheduleCatchUp(r);
  } finally {
    r.catching = false;
  }
  if (r.name === current) maybeFillUp();
}

/** Retries a catch-up with backoff (used while the gateway's upstream is away). */
function scheduleCatchUp(r) {
  if (r.retryTimer) return;
  r.retryAttempt += 1;
  const base = Math.min(10000, 300 * 2 ** (r.retryAttempt - 1));
  const delay = Math.round(base * (0.5 + Math.random() / 2));
  r.retryTimer = setTimeout(() => {
    r.retryTimer = null;
    if (isOpen() && rooms.has(r.name)) catchUp(r);
  }, delay);
}

async function loadOlder(r) {
  if (r.loadingOlder || !r.hasOlder || r.lastSeq === null || !isOpen()) return;
  const oldest = minSeq(r);
  if (oldest <= 1) {
    r.hasOlder = false;
    return;
  }
  r.loadingOlder = true;
  showHistoryNote(r);
  try {
    const a = await call("get_chat_history", { room_id: r.name, limit: PAGE, before_seq: oldest });
    const h = a.chat_history;
    for (const m of h.messages) insert(r, m);
    r.hasOlder = h.has_more;
    if (r.name === current) render("prepend");
  } catch {
    /* retried on the next scroll */
  } finally {
    r.loadingOlder = false;
    showHistoryNote(r);
  }
  if (r.name === current) maybeFillUp();
}

/** Loads older pages while the view is not full enough to scroll. */
function maybeFillUp() {
  if (renderQueued !== null) return; // the pending render calls it again
  const r = rooms.get(current);
  const s = $("scroller");
  if (r && r.hasOlder && s.scrollHeight <= s.clientHeight + 40) loadOlder(r);
}

// ---------- sending ----------

function transmit(item) {
  item.sentAt = Date.now();
  return sendFrame({
    chat_message: { id: item.id, room_id: item.room_id, sender_id: userId, content: item.content },
    request_id: `s:${item.id}`,
  });
}

function flushOutbox(all) {
  const now = Date.now();
  for (const item of outbox) {
    if (item.state !== "pending" || !rooms.has(item.room_id)) continue;
    if (all || !item.sentAt || now - item.sentAt > RESEND_AFTER_MS) transmit(item);
  }
}
setInterval(() => isOpen() && flushOutbox(false), 3000);

function send(content) {
  if (!current) return;
  const item = {
    id: crypto.randomUUID(),
    room_id: current,
    sender: userId,
    content,
    created: Date.now(),
    state: "pending",
  };
  outbox.push(item);
  saveOutbox();
  transmit(item);
  scheduleRender("bottom");
}

// ---------- rooms ----------

function normalizeRoom(s) {
  return s.trim().replace(/^#+/, "").trim();
}

function joinRoom(name, select = true) {
  name = normalizeRoom(name);
  if (!name) return;
  const isNew = !rooms.has(name);
  const r = roomState(name);
  if (isNew) {
    saveRooms();
    enterRoom(r);
  }
  if (select) selectRoom(name);
  else renderRooms();
}

function leaveRoom(name) {
  const r = rooms.get(name);
  if (!r) return;
  sendFrame({ leave_room: { room_id: name } });
  clearTimeout(r.retryTimer);
  clearTyping(r);
  rooms.delete(name);
  saveRooms();
  outbox = outbox.filter((m) => m.room_id !== name);
  saveOutbox();
  const next = rooms.keys().next().value;
  if (next) selectRoom(next);
  else {
    current = null;
    history.replaceState(null, "", location.pathname + location.search);
    render("bottom");
    renderRooms();
  }
}

function selectRoom(name) {
  const prev = rooms.get(current);
  if (prev && prev.name !== name) prev.scrollTop = atBottom() ? null : $("scroller").scrollTop;
  current = name;
  const r = rooms.get(name);
  r.unread = 0;
  const hash = `#${encodeURIComponent(name)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  closeDrawer();
  render("restore");
  renderRooms();
}

function roomFromHash() {
  try {
    return normalizeRoom(decodeURIComponent(location.hash.slice(1)));
  } catch {
    return "";
  }
}

addEventListener("hashchange", () => {
  // A sign-in link opened in this tab.
  if (auth.takeTokenFromUrl()) signInAgain();
  const name = roomFromHash();
  if (name && name !== current) joinRoom(name);
});

// ---------- rendering ----------

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });

function dayLabel(d) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return dayFmt.format(d);
}

/** Appends `text` to `el`, with http(s) links made clickable; never parses HTML. */
function appendText(el, text) {
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  for (const match of text.matchAll(re)) {
    let url = match[0].replace(/[.,;:!?)\]}]+$/, "");
    const start = match.index;
    if (start > last) el.append(document.createTextNode(text.slice(last, start)));
    let ok = false;
    try {
      const u = new URL(url);
      ok = u.protocol === "http:" || u.protocol === "https:";
    } catch {
      ok = false;
    }
    if (ok) {
      const a = document.createElement("a");
      a.href = url;
      a.textContent = url;
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      el.append(a);
    } else {
      el.append(document.createTextNode(url));
    }
    last = start + url.length;
  }
  if (last < text.length) el.append(document.createTextNode(text.slice(last)));
}

function hue(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function messageEl(m, grouped, opts = {}) {
  const li = document.createElement("li");
  li.className = "msg";
  if (m.sender_id === userId) li.classList.add("mine");
  if (grouped) li.classList.add("grouped");
  if (opts.pending) li.classList.add("pending");
  if (opts.failed) li.classList.add("failed");
  if (m.seq) li.dataset.seq = String(m.seq);
  li.dataset.id = m.id;

  const when = new Date(m.timestamp || m.created || Date.now());
  const time = document.createElement("time");
  time.dateTime = when.toISOString();
  time.textContent = timeFmt.format(when);
  time.title = fullFmt.format(when);

  if (grouped) {
    time.className = "gutter-time";
    li.append(time);
  } else {
    const name = nameOf(m.sender_id);
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    avatar.textContent = (name.trim()[0] || "?").toUpperCase();
    avatar.style.setProperty("--h", hue(m.sender_id));
    li.append(avatar);
  }

  const body = document.createElement("div");
  body.className = "body";
  if (!grouped) {
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = nameOf(m.sender_id);
    meta.append(who);
    if (m.sender_id === userId) meta.append(youBadge());
    meta.append(time);
    body.append(meta);
  }
  const text = document.createElement("div");
  text.className = "text";
  appendText(text, m.content);
  body.append(text);

  if (opts.pending || opts.failed) {
    const st = document.createElement("div");
    st.className = "send-state";
    if (opts.failed) {
      const err = document.createElement("span");
      err.className = "send-error";
      err.textContent = `Not sent: ${m.error}`;
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "btn link";
      retry.textContent = "Retry";
      retry.dataset.action = "retry";
      const discard = document.createElement("button");
      discard.type = "button";
      discard.className = "btn link";
      discard.textContent = "Discard";
      discard.dataset.action = "discard";
      st.append(err, " ", retry, " ", discard);
    } else {
      st.textContent = isOpen() ? "Sending…" : "Waiting for connection…";
    }
    body.append(st);
  }
  li.append(body);
  return li;
}

function atBottom() {
  const s = $("scroller");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}

let renderQueued = null;
const modeRank = { null: 0, append: 1, bottom: 2, prepend: 3, restore: 4 };
function scheduleRender(mode = null) {
  if (renderQueued === null) {
    renderQueued = mode ?? "none";
    queueMicrotask(() => {
      const m = renderQueued;
      renderQueued = null;
      render(m);
    });
  } else if ((modeRank[mode] ?? 0) > (modeRank[renderQueued] ?? 0)) {
    renderQueued = mode;
  }
  renderRooms();
}

function render(mode = "none") {
  const s = $("scroller");
  const list = $("messages");
  const wasAtBottom = atBottom();
  const fromBottom = s.scrollHeight - s.scrollTop;
  const keepTop = s.scrollTop;
  const r = current ? rooms.get(current) : null;

  $("room-title").textContent = r ? `# ${r.name}` : "No room";
  document.title = totalUnread() ? `(${totalUnread()}) wsgate chat` : "wsgate chat";
  $("leave").hidden = !r;
  $("content").disabled = !r;
  $("send-btn").disabled = !r;
  $("content").placeholder = r ? `Message #${r.name}` : "Join a room to send messages";

  const frag = document.createDocumentFragment();
  let prev = null;
  let prevDay = "";
  const add = (m, opts) => {
    const when = new Date(m.timestamp || m.created || Date.now());
    const day = when.toDateString();
    if (day !== prevDay) {
      const sep = document.createElement("li");
      sep.className = "day";
      sep.textContent = dayLabel(when);
      frag.append(sep);
      prevDay = day;
      prev = null;
    }
    const grouped =
      prev &&
      prev.sender_id === m.sender_id &&
      !opts.failed &&
      when - new Date(prev.timestamp || prev.created) < GROUP_GAP_MS;
    frag.append(messageEl(m, grouped, opts));
    prev = m;
  };
  if (r) {
    const seqs = [...r.bySeq.keys()].sort((a, b) => a - b);
    for (const q of seqs) add(r.bySeq.get(q), {});
    for (const o of outbox) {
      if (o.room_id !== r.name) continue;
      add({ ...o, sender_id: userId }, { pending: o.state === "pending", failed: o.state === "failed" });
    }
  }
  list.replaceChildren(frag);

  const empty = $("empty");
  if (!r) {
    empty.hidden = false;
    empty.textContent = "Join a room from the side list to start chatting.";
  } else if (r.lastSeq === null && !r.bySeq.size) {
    empty.hidden = false;
    empty.textContent = isOpen() ? "Loading messages…" : "Messages will load once connected.";
  } else if (!r.bySeq.size && !outbox.some((o) => o.room_id === r.name)) {
    empty.hidden = false;
    empty.textContent = `This is the start of #${r.name}. Say hello!`;
  } else empty.hidden = true;
  showHistoryNote(r);

  if (mode === "prepend") s.scrollTop = s.scrollHeight - fromBottom;
  else if (mode === "restore") {
    if (r && r.scrollTop !== null) s.scrollTop = r.scrollTop;
    else s.scrollTop = s.scrollHeight;
  } else if (mode === "bottom" || wasAtBottom) s.scrollTop = s.scrollHeight;
  else s.scrollTop = keepTop;

  if (mode === "append" && !wasAtBottom) $("jump").hidden = false;
  if (atBottom()) $("jump").hidden = true;
  renderPresence();
  renderTyping();
  if (r) maybeFillUp();
}

function showHistoryNote(r) {
  const note = $("history-note");
  if (!r || r.lastSeq === null || !r.bySeq.size) {
    note.hidden = true;
    return;
  }
  note.hidden = false;
  note.textContent = r.loadingOlder
    ? "Loading older messages…"
    : r.hasOlder
      ? "Scroll up for older messages"
      : `This is the beginning of #${r.name}.`;
}

const totalUnread = () => [...rooms.values()].reduce((n, r) => n + (r.name === current ? 0 : r.unread), 0);

function renderRooms() {
  const ul = $("room-list");
  const frag = document.createDocumentFragment();
  for (const r of rooms.values()) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#${encodeURIComponent(r.name)}`;
    a.className = "room";
    if (r.name === current) {
      a.setAttribute("aria-current", "page");
      r.unread = 0;
    }
    const label = document.createElement("span");
    label.className = "room-name";
    label.textContent = r.name;
    a.append(label);
    if (r.unread) {
      a.classList.add("has-unread");
      const b = document.createElement("span");
      b.className = "badge";
      b.textContent = r.unread > 99 ? "99+" : String(r.unread);
      b.setAttribute("aria-label", `${r.unread} unread`);
      a.append(b);
    }
    li.append(a);
    frag.append(li);
  }
  ul.replaceChildren(frag);
  const total = totalUnread();
  const badge = $("total-unread");
  badge.hidden = !total;
  badge.textContent = total > 99 ? "99+" : String(total);
}

let announceTimer = null;
function announce(text) {
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    $("announcer").textContent = text;
  }, 150);
}

// ---------- UI wiring ----------

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

function init() {
  $("name").value = userName;
  $("profile").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("name").value.trim();
    const note = $("name-note");
    if (!name) return;
    note.textContent = "Saving…";
    note.className = "note";
    try {
      const a = await call("set_user_name", { user_id: userId, name });
      setOwnName(a.user.name);
      note.textContent = "Saved";
    } catch (e) {
      note.textContent = e.code === "UNAVAILABLE" ? "Not connected — try again soon" : e.message || e.code;
      note.className = "note error";
    }
  });

  $("join").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("join-room").value;
    $("join-room").value = "";
    joinRoom(name);
    $("content").focus();
  });

  // The skip link must not touch the hash: the hash names the room.
  document.querySelector(".skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("content").focus();
  });
  $("leave").addEventListener("click", () => current && leaveRoom(current));
  $("sign-out").addEventListener("click", signOut);
  $("signin-retry").addEventListener("click", async () => {
    if (auth.canRenew()) await auth.fetchToken().catch(() => {});
    signInAgain();
  });
  $("retry").addEventListener("click", reconnectNow);
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
    const name = decodeURIComponent(a.getAttribute("href").slice(1));
    selectRoom(name);
    $("content").focus();
  });

  const content = $("content");
  const grow = () => {
    content.style.height = "auto";
    content.style.height = `${Math.min(content.scrollHeight, 200)}px`;
  };
  content.addEventListener("input", grow);
  content.addEventListener("input", () => noteTyping(content.value));
  content.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("send").requestSubmit();
    }
  });
  $("send").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = content.value.replace(/^\s*\n|\s+$/g, "");
    if (!text.trim() || !current) return;
    content.value = "";
    grow();
    send(text);
  });

  $("messages").addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn) return;
    const id = btn.closest("li").dataset.id;
    const item = outbox.find((m) => m.id === id);
    if (!item) return;
    if (btn.dataset.action === "retry") {
      item.state = "pending";
      delete item.error;
      transmit(item);
    } else {
      outbox = outbox.filter((m) => m !== item);
    }
    saveOutbox();
    scheduleRender();
  });

  $("scroller").addEventListener("scroll", () => {
    const r = rooms.get(current);
    if (atBottom()) $("jump").hidden = true;
    if (r && $("scroller").scrollTop < 120) loadOlder(r);
  });
  $("jump").addEventListener("click", () => {
    $("scroller").scrollTop = $("scroller").scrollHeight;
    $("jump").hidden = true;
    $("content").focus();
  });

  auth.takeTokenFromUrl(); // before the fragment is read as a room name
  // Rooms: the saved list, plus the one in the URL.
  for (const name of store.get("wsgate.rooms", [])) if (typeof name === "string" && name) roomState(name);
  for (const o of outbox) roomState(o.room_id);
  if (!rooms.size && !roomFromHash()) roomState("general");
  saveRooms();
  const wanted = roomFromHash() || rooms.keys().next().value;
  roomState(wanted);
  saveRooms();
  selectRoom(wanted);
  connect();
}

init();

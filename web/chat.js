// The chat protocol over the connection: frames from the server become store
// changes; the user's actions become frames. Joining and catching up on
// rooms, older pages, the outbox (sent, resent, confirmed), name lookups,
// typing. Touches no DOM.

const PAGE = 50; // history page size
const CATCH_UP_PAGE = 200;
/** An unconfirmed message is sent again after this (the server deduplicates by id). */
const RESEND_AFTER_MS = 10000;
const FLUSH_EVERY_MS = 3000;
/** An id still without a name is asked again at most this far apart. */
const NAME_RETRY_MAX_MS = 2 * 60 * 1000;
/** Edits caught up per page after a reconnect. */
const CHANGES_PAGE = 200;
const TYPING_SHOW_MS = 5000;
const TYPING_SEND_EVERY_MS = 3000;

/**
 * `store`: store.js; `conn`: connection.js; `announce(text)`: for screen
 * readers; `newId()`: message ids; `isVisible()`: whether the page is seen;
 * `sendsOutbox()`: whether this tab sends the outbox (of the tabs of one
 * browser, one does; the others queue into the shared outbox and show it).
 */
export function createChat({ store, conn, announce = () => {}, newId, isVisible = () => true, sendsOutbox = () => true }) {
  // The own id is read at each use: signing in (--auth jwt) may change it.
  const me = () => store.state.userId;
  const rooms = new Map(); // room name -> {catching, catchAgain, retryTimer, retryAttempt}
  const sync = (name) => {
    let s = rooms.get(name);
    if (!s) {
      s = { catching: false, catchAgain: false, retryTimer: null, retryAttempt: 0 };
      rooms.set(name, s);
    }
    return s;
  };
  let resendAfterCatchUp = false; // the upstream was lost: resend the outbox once it is back

  // ---------- names ----------

  const fresh = new Map(); // id -> when it was looked up on this connection
  const lookingUp = new Set();
  const nameRetries = new Map(); // id -> lookups that found no name yet

  /**
   * Looks a name up once per connection: renames of users sharing a room with
   * us are announced (user_renamed), so a name does not go stale while
   * connected; the lookup on each new connection covers what was missed.
   */
  function wantName(id) {
    if (typeof id !== "string" || id === me() || lookingUp.has(id) || !conn.isOpen()) return;
    if (fresh.has(id)) return;
    lookingUp.add(id);
    conn
      .call("get_user", { user_id: id })
      .then((a) => learnName(id, (a.user && a.user.name) || id))
      .catch((e) => {
        if (e.code === "NOT_FOUND") learnName(id, id);
      })
      .finally(() => lookingUp.delete(id));
  }

  /**
   * A user seen the moment they arrive may not have stored their name yet
   * (it travels apart from their join), so an id without a name is asked
   * again soon, then less and less often.
   */
  function learnName(id, name) {
    fresh.set(id, Date.now());
    if (name === id) {
      const n = nameRetries.get(id) || 0;
      nameRetries.set(id, n + 1);
      setTimeout(
        () => {
          fresh.delete(id);
          wantName(id);
        },
        Math.min(NAME_RETRY_MAX_MS, 1000 * 2 ** n),
      );
      if (!store.state.names.has(id)) store.renameUser(id, id);
      return;
    }
    nameRetries.delete(id);
    store.renameUser(id, name);
  }

  function wantNamesOf(msgs) {
    const ids = new Set();
    for (const m of msgs) ids.add(m.sender_id);
    for (const id of ids) wantName(id);
  }

  /** Names of everyone shown in the current room (on connect and when switching). */
  function wantNamesShown() {
    const r = store.currentRoom();
    if (!r) return;
    const ids = new Set(r.online || []);
    for (const m of r.bySeq.values()) ids.add(m.sender_id);
    for (const id of ids) wantName(id);
  }

  // ---------- frames ----------

  /** The connection is up and signed in (`signedIn`: with a token, the server holds the name). */
  function onOpen(signedIn = false) {
    // Others may have renamed themselves meanwhile.
    fresh.clear();
    if (!signedIn) conn.call("set_user_name", { user_id: me(), name: store.state.userName }).catch(() => {});
    // What this server accepts (a server without get_limits: the defaults stay, it still refuses with a reason).
    conn
      .call("get_limits", {})
      .then((a) => store.setLimits(a.limits))
      .catch(() => {});
    flushOutbox(true);
    // A room the server refused is not asked again (its "Try again" does).
    for (const r of store.state.rooms.values()) if (r.error === null) enterRoom(r.name);
    wantNamesShown();
  }

  function onClose() {
    for (const s of rooms.values()) s.catching = false;
    for (const timers of typingTimers.values()) for (const t of timers.values()) clearTimeout(t);
    typingTimers.clear();
    store.disconnected();
  }

  function onFrame(frame) {
    if (frame.error) onError(frame.error, frame.request_id);
    else if (frame.chat_message) onChatMessage(frame.chat_message);
    else if (frame.presence) {
      onPresence(frame.presence);
      // A snapshot nobody asked for: the gateway re-opened the stream (after a
      // renewal, or the service coming back), and what was said meanwhile
      // reaches us only through history.
      const p = frame.presence;
      if (p && p.snapshot && store.room(p.room_id)) catchUp(p.room_id);
    } else if (frame.typing) onTyping(frame.typing);
    else if (frame.message_changed) onMessageChanged(frame.message_changed);
    // The message list, the online list and the typing line follow the store.
    else if (frame.user_renamed) store.renameUser(frame.user_renamed.user_id, frame.user_renamed.name);
  }

  function onMessageChanged(m) {
    if (!m || typeof m.room_id !== "string" || !store.room(m.room_id)) return;
    const r = store.room(m.room_id);
    const known = r.revision;
    store.changeMessage(m.room_id, m);
    // A revision skipped: a change we did not hear of (as a seq gap is).
    if (known !== null && r.lastSeq !== null && (Number(m.revision) || 0) > known + 1) catchUp(m.room_id);
  }

  function onError(error, rid) {
    if (typeof rid === "string" && rid.startsWith("s:")) {
      const item = store.findOutbox(rid.slice(2));
      if (item && error.code !== "UNAVAILABLE") {
        store.failOutbox(item.id, error.message || error.code);
        return;
      }
    }
    if (error.code === "UNAVAILABLE" || error.code === "RESOURCE_EXHAUSTED") {
      // The gateway lost its upstream but kept us: fetch what we miss once it
      // is back, and resend what is unconfirmed (deduplicated by id).
      store.setConnection("reconnecting", "Server unavailable — catching up…");
      resendAfterCatchUp = true;
      for (const name of store.state.rooms.keys()) scheduleCatchUp(name);
    }
  }

  function onChatMessage(m) {
    if (!m || typeof m.room_id !== "string") return;
    const r = store.room(m.room_id);
    if (r) stopTyping(m.room_id, m.sender_id);
    const added = store.insertMessages(m.room_id, [m]);
    if (!r || !added.length) return;
    noteNew(m.room_id, added);
    wantNamesOf(added);
    if (r.lastSeq !== null && r.maxSeq > r.lastSeq) catchUp(m.room_id); // a gap
  }

  function onPresence(p) {
    if (!p || !store.room(p.room_id)) return;
    store.setPresence(p.room_id, p);
    for (const id of Array.isArray(p.offline) ? p.offline : []) clearTypingTimer(p.room_id, id);
    if (p.room_id === store.state.current) for (const id of p.online || []) wantName(id);
  }

  // ---------- typing ----------

  const typingTimers = new Map(); // room -> Map(user id -> expiry timer)
  function clearTypingTimer(room, id) {
    const timers = typingTimers.get(room);
    if (!timers) return;
    clearTimeout(timers.get(id));
    timers.delete(id);
  }
  function onTyping(t) {
    if (!t || typeof t.user_id !== "string" || t.user_id === me() || !store.room(t.room_id)) return;
    clearTypingTimer(t.room_id, t.user_id);
    if (!typingTimers.has(t.room_id)) typingTimers.set(t.room_id, new Map());
    typingTimers.get(t.room_id).set(
      t.user_id,
      setTimeout(() => stopTyping(t.room_id, t.user_id), TYPING_SHOW_MS),
    );
    store.setTyping(t.room_id, t.user_id, true);
    wantName(t.user_id);
  }
  function stopTyping(room, id) {
    clearTypingTimer(room, id);
    store.setTyping(room, id, false);
  }

  let lastTypingSent = { room: null, at: 0 };
  /** Tells the room its user is typing: at most once every 3 s, never for an empty box. */
  function noteTyping(text) {
    const room = store.state.current;
    if (!room || !text.trim() || !conn.isOpen()) return;
    const now = Date.now();
    if (lastTypingSent.room === room && now - lastTypingSent.at < TYPING_SEND_EVERY_MS) return;
    lastTypingSent = { room, at: now };
    conn.send({ typing: { room_id: room, user_id: me() } });
  }

  // ---------- rooms & history ----------

  /** Messages of others: unread when not shown, and read out to screen readers. */
  function noteNew(room, msgs) {
    const others = msgs.filter((m) => m.sender_id !== me());
    if (!others.length) return;
    if (room !== store.state.current || !isVisible()) store.addUnread(room, others.length);
    const last = others[others.length - 1];
    if (room === store.state.current) announce(`${store.nameOf(last.sender_id)}: ${last.content.slice(0, 140)}`);
    else announce(`New message in ${room}`);
  }

  /**
   * Joins the room on the server, then catches up. The join's answer (the
   * presence snapshot, with our request_id) comes once the server counts this
   * connection in the room: every message stored after it arrives live, and the
   * history call made after it covers everything before, so nothing falls
   * between the two.
   */
  function enterRoom(name) {
    conn
      .call("join_room", { room_id: name, user_id: me() })
      .then((f) => {
        if (f.presence) onPresence(f.presence);
        return true;
      })
      .catch((e) => {
        // Closed meanwhile (or signed out): the re-join after reconnecting does it again.
        if (!e || ["UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAUTHENTICATED"].includes(e.code)) return true;
        // Refused (a bad name, a room the token may not enter, too many rooms): say why, do not ask again.
        store.setRefused(name, e.message || e.code);
        return false;
      })
      .then((ok) => {
        if (ok && conn.isOpen() && store.room(name)) catchUp(name);
      });
  }

  /** Brings a room up to date: its last page the first time, else everything after lastSeq. */
  async function catchUp(name) {
    const s = sync(name);
    if (s.catching) {
      s.catchAgain = true;
      return;
    }
    if (!conn.isOpen()) return;
    s.catching = true;
    try {
      do {
        s.catchAgain = false;
        const r = store.room(name);
        if (!r || r.error !== null) return;
        if (r.lastSeq === null) {
          const a = await conn.call("get_chat_history", { room_id: name, limit: PAGE, before_seq: 0 });
          const h = a.chat_history;
          const added = store.insertMessages(name, h.messages);
          wantNamesOf(added);
          store.noteRevision(name, h.revision);
          const now = store.room(name);
          if (now) store.setRoomMeta(name, { hasOlder: !!h.has_more, lastSeq: now.maxSeq });
        } else {
          for (;;) {
            const a = await conn.call("get_chat_history", {
              room_id: name,
              limit: CATCH_UP_PAGE,
              after_seq: r.lastSeq,
            });
            const h = a.chat_history;
            const added = store.insertMessages(name, h.messages);
            if (added.length) noteNew(name, added);
            wantNamesOf(added);
            let last = r.lastSeq;
            for (const m of h.messages) last = Math.max(last, Number(m.seq) || 0);
            store.setRoomMeta(name, { lastSeq: last });
            if (!h.has_more) break;
          }
          if (r.maxSeq > r.lastSeq) store.setRoomMeta(name, { lastSeq: r.maxSeq });
          await catchUpChanges(name);
        }
      } while (s.catchAgain);
      s.retryAttempt = 0;
      if (conn.isOpen()) store.setConnection("connected", "Connected");
      flushOutbox(resendAfterCatchUp);
      resendAfterCatchUp = false;
    } catch (e) {
      if (e && e.code === "INVALID_ARGUMENT") return; // a room name the server refuses
      scheduleCatchUp(name);
    } finally {
      s.catching = false;
    }
  }

  /** Edits and deletions made since the highest revision known (after a disconnection or a gap). */
  async function catchUpChanges(name) {
    for (;;) {
      const r = store.room(name);
      if (!r || r.revision === null) return;
      const a = await conn.call("get_chat_history", {
        room_id: name,
        limit: CHANGES_PAGE,
        changed_since: String(r.revision),
      });
      const h = a.chat_history;
      for (const m of h.messages) store.changeMessage(name, m);
      if (!h.has_more || !h.messages.length) {
        store.noteRevision(name, h.revision);
        return;
      }
    }
  }

  /** Retries a catch-up with backoff (used while the gateway's upstream is away). */
  function scheduleCatchUp(name) {
    const s = sync(name);
    if (s.retryTimer) return;
    s.retryAttempt += 1;
    const base = Math.min(10000, 300 * 2 ** (s.retryAttempt - 1));
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    s.retryTimer = setTimeout(() => {
      s.retryTimer = null;
      if (conn.isOpen() && store.room(name)) catchUp(name);
    }, delay);
  }

  /** "Retry now" while the upstream is away: the catch-ups waiting on a backoff go at once. */
  function retryNow() {
    if (!conn.isOpen()) return;
    for (const [name, s] of rooms) {
      if (!s.retryTimer) continue;
      clearTimeout(s.retryTimer);
      s.retryTimer = null;
      catchUp(name);
    }
  }

  /** The page before the oldest message held. */
  async function loadOlder(name) {
    const r = store.room(name);
    if (!r || r.loadingOlder || !r.hasOlder || r.lastSeq === null || !conn.isOpen()) return;
    if (r.minSeq <= 1) {
      store.setRoomMeta(name, { hasOlder: false });
      return;
    }
    store.setRoomMeta(name, { loadingOlder: true });
    try {
      const a = await conn.call("get_chat_history", { room_id: name, limit: PAGE, before_seq: r.minSeq });
      const h = a.chat_history;
      const added = store.insertMessages(name, h.messages);
      wantNamesOf(added);
      store.setRoomMeta(name, { hasOlder: !!h.has_more, loadingOlder: false });
    } catch {
      store.setRoomMeta(name, { loadingOlder: false }); // retried on the next scroll
    }
  }

  function joinRoom(name, select = true) {
    if (!name) return;
    const [, isNew] = store.addRoom(name);
    if (isNew) enterRoom(name);
    if (select) selectRoom(name);
  }

  function selectRoom(name) {
    store.select(name);
    wantNamesShown();
  }

  /** Asks the server again for a room it refused (the user's "Try again"). */
  function retryRoom(name) {
    const r = store.room(name);
    if (!r || r.error === null) return;
    store.setRefused(name, null);
    enterRoom(name);
  }

  function leaveRoom(name) {
    const r = store.room(name);
    if (!r) return;
    if (r.error === null) conn.send({ leave_room: { room_id: name } });
    const s = rooms.get(name);
    if (s) clearTimeout(s.retryTimer);
    rooms.delete(name);
    for (const t of typingTimers.get(name)?.values() || []) clearTimeout(t);
    typingTimers.delete(name);
    store.removeRoom(name);
    const next = store.state.rooms.keys().next().value;
    if (next !== undefined) selectRoom(next);
  }

  // ---------- sending ----------

  function transmit(item) {
    if (!sendsOutbox()) return false; // the tab that does sends it from the shared outbox
    store.markSent(item);
    return conn.send({
      chat_message: { id: item.id, room_id: item.room_id, sender_id: me(), content: item.content },
      request_id: `s:${item.id}`,
    });
  }

  function flushOutbox(all) {
    if (!sendsOutbox() || !conn.isOpen()) return;
    const now = Date.now();
    for (const item of store.state.outbox) {
      if (item.state !== "pending" || !store.room(item.room_id)) continue;
      if (all || !item.sentAt || now - item.sentAt > RESEND_AFTER_MS) transmit(item);
    }
  }
  setInterval(() => conn.isOpen() && flushOutbox(false), FLUSH_EVERY_MS);

  function send(content) {
    const room = store.state.current;
    if (!room) return;
    transmit(store.queue(room, content, newId()));
  }

  function retry(id) {
    const item = store.retryOutbox(id);
    if (item) transmit(item);
  }

  /**
   * Edits (content) or deletes (content null) one of the own messages. The
   * answer is our copy of message_changed; a refusal rejects with {code, message}.
   */
  async function changeOwn(room, seq, content) {
    const ref = { room_id: room, seq: String(seq), sender_id: me() };
    const a =
      content === null
        ? await conn.call("delete_message", ref)
        : await conn.call("edit_message", { ...ref, content });
    if (a.message_changed) store.changeMessage(room, a.message_changed);
  }

  async function setName(name) {
    const a = await conn.call("set_user_name", { user_id: me(), name });
    store.setUserName((a.user && a.user.name) || name);
  }

  return {
    onOpen,
    onClose,
    onFrame,
    joinRoom,
    selectRoom,
    leaveRoom,
    retryRoom,
    loadOlder,
    send,
    retry,
    /** Sends what is due in the outbox (another tab queued something, or this one now sends it). */
    flushOutbox: () => flushOutbox(false),
    discard: (id) => store.discardOutbox(id),
    setName,
    noteTyping,
    retryNow,
    editMessage: (room, seq, content) => changeOwn(room, seq, content),
    deleteMessage: (room, seq) => changeOwn(room, seq, null),
  };
}

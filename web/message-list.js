// Rendering of the message list, at the cost of what changed. Each room has
// its own list, built once and kept in the page while the room is not shown
// (class "away": content-visibility hidden, so the browser keeps its layout
// and showing it again costs little); the shown one carries id="messages". A live message inserts one element (and redraws
// the one after it if its grouping changed), an older page one fragment, a
// confirmation replaces the pending element in place, a rename rewrites that
// user's headers. Changes to a room not shown wait until it is shown.
// Reads the store; never changes it (asks for older pages through `onWantOlder`).

import { dayKey, dayLabel, groupsWith, hue, linkParts, whenOf } from "./format.js";
import { mentionParts } from "./mention.js";

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });

/** Within this many pixels of the end counts as "at the bottom" (stick to new messages). */
const BOTTOM_SLACK_PX = 48;
/** A message's height until it has been drawn (a grouped one is less, one with a header more). */
const ESTIMATE_PX = 36;
/** Entries per chunk of the list, for live messages (see chunk()). */
const CHUNK = 100;
/** Closer than this to the top asks for the older page. */
const LOAD_OLDER_PX = 120;

/** The "you" badge beside the user's own name. */
export function youBadge() {
  const you = document.createElement("span");
  you.className = "you";
  you.textContent = "you";
  return you;
}

/**
 * Appends `text` to `el`, with http(s) links made clickable and mentions of
 * `people` ([{id, name}]) marked (`me`: the own id, marked more strongly);
 * never parses HTML.
 */
export function appendText(el, text, people = [], me = null) {
  for (const part of linkParts(text)) {
    if (part.url) {
      const a = document.createElement("a");
      a.href = part.url;
      a.textContent = part.url;
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      el.append(a);
    } else {
      for (const p of people.length ? mentionParts(part.text, people) : [part]) {
        if (p.id === undefined) {
          el.append(document.createTextNode(p.text));
          continue;
        }
        const m = document.createElement("span");
        m.className = p.id === me ? "mention me" : "mention";
        m.textContent = p.text;
        el.append(m);
      }
    }
  }
}

/**
 * `dom`: {scroller, list (the initial #messages), empty, refused (Try again and Remove
 * of a refused room), note, jump};
 * `isOpen()`: whether the connection is up (for "Sending…"); `onReplaced(old, el, focused)`:
 * an element being edited (class "editing") was replaced by `el` (message-edit.js);
 * `focused`: the focus was in it.
 */
export function createMessageList({ store, dom, isOpen, onWantOlder, onReplaced = () => {} }) {
  // The own id is read at each use: signing in (--auth jwt) may change it.
  const me = () => store.state.userId;
  const views = new Map(); // room name -> view
  let shown = null; // the view in the scroller
  const template = dom.list;
  const dividers = new Map(); // room -> seq of the first unread message ("New messages" above it)

  // ---------- elements ----------

  function senderHeader(li, m) {
    const name = store.nameOf(m.sender_id);
    const avatar = li.querySelector(".avatar");
    if (avatar) avatar.textContent = (name.trim()[0] || "?").toUpperCase();
    const who = li.querySelector(".who");
    if (who) who.textContent = name;
    // A grouped message shows no name: a screen reader still says whose it is.
    const said = li.querySelector(".sr-sender");
    if (said) said.textContent = `${name}: `;
  }

  function messageEl(entry) {
    const { msg: m, grouped, pending, failed } = entry;
    const li = document.createElement("li");
    li.className = "msg";
    li.setAttribute("role", "listitem"); // its chunk's <ol> is role=none (see chunk())
    if (m.sender_id === me()) li.classList.add("mine");
    if (grouped) li.classList.add("grouped");
    if (pending) li.classList.add("pending");
    if (failed) li.classList.add("failed");
    if (m.seq) li.dataset.seq = String(m.seq);
    li.dataset.id = m.id;
    li.dataset.sender = m.sender_id;

    const when = whenOf(m);
    const time = document.createElement("time");
    time.dateTime = when.toISOString();
    time.textContent = timeFmt.format(when);
    time.title = fullFmt.format(when);

    const body = document.createElement("div");
    body.className = "body";
    if (grouped) {
      time.className = "gutter-time";
      const said = document.createElement("span");
      said.className = "sr-only sr-sender";
      li.append(said, time);
    } else {
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.style.setProperty("--h", hue(m.sender_id));
      li.append(avatar);
      const meta = document.createElement("div");
      meta.className = "meta";
      const who = document.createElement("span");
      who.className = "who";
      meta.append(who);
      if (m.sender_id === me()) meta.append(youBadge());
      meta.append(time);
      body.append(meta);
    }
    const text = document.createElement("div");
    text.className = "text";
    if (m.deleted) {
      li.classList.add("deleted");
      text.textContent = "message deleted";
    } else {
      // Mentions are looked for only where an "@" is (most messages have none).
      const people = m.content.includes("@") ? store.people(m.room_id) : [];
      appendText(text, m.content, people, me());
      if (people.length && text.querySelector(".mention.me")) li.classList.add("mentions-me");
    }
    body.append(text);
    if (m.edited_at && !m.deleted) {
      text.classList.add("is-edited");
      body.append(editedMark(m));
    }
    if (pending || failed) body.append(sendState(entry));
    else if (m.sender_id === me() && !m.deleted) body.append(ownActions());
    li.append(body);
    senderHeader(li, m);
    if (m.seq && dividers.get(m.room_id) === m.seq) li.prepend(dividerEl());
    return li;
  }

  function editedMark(m) {
    const mark = document.createElement("span");
    mark.className = "edited";
    mark.textContent = "(edited)";
    const at = new Date(m.edited_at);
    if (!Number.isNaN(at.getTime())) mark.title = `Edited ${fullFmt.format(at)}`;
    return mark;
  }

  /** Edit and Delete on the own confirmed messages (message-edit.js runs them). */
  function ownActions() {
    const actions = document.createElement("div");
    actions.className = "msg-actions";
    for (const [action, label] of [
      ["edit", "Edit"],
      ["delete", "Delete"],
    ]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "btn link";
      b.dataset.action = action;
      b.textContent = label;
      b.setAttribute("aria-label", `${label} message`);
      actions.append(b);
    }
    return actions;
  }

  function sendState(entry) {
    const st = document.createElement("div");
    st.className = "send-state";
    if (entry.failed) {
      const err = document.createElement("span");
      err.className = "send-error";
      err.textContent = `Not sent: ${entry.msg.error}`;
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
    return st;
  }

  function dividerEl() {
    const line = document.createElement("div");
    line.className = "unread-line";
    line.setAttribute("role", "separator");
    line.textContent = "New messages";
    return line;
  }

  /** Puts the "New messages" line above message `seq` of `room` (null: none). */
  function setDivider(room, seq) {
    const view = views.get(room);
    if (view) for (const old of view.list.querySelectorAll(".unread-line")) old.remove();
    if (seq === null) {
      dividers.delete(room);
      return;
    }
    dividers.set(room, seq);
    const li = view && view.list.querySelector(`li.msg[data-seq="${seq}"]`);
    if (li) li.prepend(dividerEl());
  }

  function daySep(m) {
    const sep = document.createElement("li");
    sep.className = "day";
    sep.setAttribute("role", "listitem");
    sep.textContent = dayLabel(whenOf(m), new Date(), (d) => dayFmt.format(d));
    return sep;
  }

  // ---------- a room's list ----------
  // view.entries: confirmed messages by seq, then the pending ones in outbox
  // order; each {key, msg, pending, failed, grouped, day, el, sep}.

  function newView(room) {
    const list = template.cloneNode(false);
    list.removeAttribute("id");
    const view = { room, list, entries: [], confirmed: 0, queued: [], outboxStale: false, scrollTop: null };
    views.set(room, view);
    const all = store.messagesOf(room).map(confirmedEntry);
    for (let i = 0; i < all.length; i += CHUNK) insertRun(view, view.entries.length, all.slice(i, i + CHUNK));
    syncPending(view);
    return view;
  }

  const confirmedEntry = (msg) => ({ key: msg.seq, msg, pending: false, failed: false });
  const pendingEntry = (item) => ({
    key: `p:${item.id}`,
    msg: { ...item, sender_id: me() },
    pending: item.state === "pending",
    failed: item.state === "failed",
  });

  /** Grouping and day separator of `entry` after `prev`; (re)builds its element if they changed. */
  function place(entry, prev) {
    const day = dayKey(entry.msg);
    const needSep = !prev || prev.day !== day;
    const grouped = !needSep && groupsWith(prev.msg, entry.msg, { failed: entry.failed });
    let changed = false;
    if (!entry.el || entry.grouped !== grouped) {
      entry.grouped = grouped;
      const el = messageEl(entry);
      if (entry.el && entry.el.parentNode) {
        // Taking the element out of the page takes the focus from what is in it.
        const focused = entry.el.contains(document.activeElement);
        entry.el.replaceWith(el);
        if (entry.el.classList.contains("editing")) onReplaced(entry.el, el, focused);
      }
      entry.el = el;
      changed = true;
    }
    entry.day = day;
    if (needSep && !entry.sep) {
      entry.sep = daySep(entry.msg);
      if (entry.el.parentNode) entry.el.before(entry.sep);
      changed = true;
    } else if (!needSep && entry.sep) {
      entry.sep.remove();
      entry.sep = null;
      changed = true;
    }
    return changed;
  }

  const firstNode = (entry) => entry.sep || entry.el;

  /**
   * The list is made of chunks (an <ol> of up to CHUNK entries; an older
   * page is one chunk): a layout after one message then walks the chunks
   * and one chunk, not every message of the room. A chunk is role=none and
   * its entries say role=listitem, so a screen reader hears one list of
   * every message (the room's, role=list), not a list per chunk.
   */
  function chunk(content) {
    const ol = document.createElement("ol");
    ol.className = "chunk";
    ol.setAttribute("role", "none");
    // Off screen a chunk is skipped (content-visibility: auto) and counts
    // this estimate until it has been drawn once; then its real height.
    ol.style.containIntrinsicSize = `auto ${Math.max(1, content.childElementCount) * ESTIMATE_PX}px`;
    ol.append(content);
    return ol;
  }

  /** Inserts entries (in order) at `index` as one fragment, then re-places the entry after them. */
  function insertRun(view, index, run) {
    if (!run.length) return;
    const frag = document.createDocumentFragment();
    let prev = view.entries[index - 1] || null;
    for (const e of run) {
      place(e, prev);
      if (e.sep) frag.append(e.sep);
      frag.append(e.el);
      prev = e;
    }
    const next = view.entries[index];
    if (next && index > 0) next.el.parentNode.insertBefore(frag, firstNode(next));
    else if (next) view.list.prepend(chunk(frag)); // an older page: a chunk of its own, above
    else {
      const last = view.list.lastElementChild;
      if (last && last.childElementCount < CHUNK) last.append(frag);
      else view.list.append(chunk(frag));
    }
    view.entries.splice(index, 0, ...run);
    if (!run[0].pending && !run[0].failed) view.confirmed += run.length;
    if (next) place(next, prev);
  }

  function removeAt(view, index) {
    const [e] = view.entries.splice(index, 1);
    const list = e.el.parentNode;
    e.sep?.remove();
    e.el.remove();
    if (list && !list.firstChild) list.remove(); // the chunk is empty
    if (!e.pending && !e.failed) view.confirmed -= 1;
    const next = view.entries[index];
    if (next) place(next, view.entries[index - 1] || null);
  }

  /** Index where a confirmed message of this seq goes (binary search over the confirmed part). */
  function confirmedIndex(view, seq) {
    let lo = 0;
    let hi = view.confirmed;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (view.entries[mid].key < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the pending entry of outbox item `id`, or -1. */
  function pendingIndex(view, id) {
    const key = `p:${id}`;
    for (let k = view.confirmed; k < view.entries.length; k++) if (view.entries[k].key === key) return k;
    return -1;
  }

  /** New stored messages (sorted by seq), wherever they fall: runs of them go in as fragments. */
  function addMessages(view, added) {
    const mine = (m) => m.sender_id === me() && view.entries.length > view.confirmed;
    let i = 0;
    while (i < added.length) {
      const m = added[i];
      const at = confirmedIndex(view, m.seq);
      const p = mine(m) ? pendingIndex(view, m.id) : -1;
      // The confirmation of the first pending message, where it already stands.
      if (p === view.confirmed && at === view.confirmed) {
        confirmInPlace(view, view.entries[p], m);
        i += 1;
        continue;
      }
      if (p >= 0) removeAt(view, p);
      // The messages that go to the same place form one fragment.
      const bound = at < view.confirmed ? view.entries[at].key : Infinity;
      let j = i + 1;
      while (j < added.length && added[j].seq < bound && !(mine(added[j]) && pendingIndex(view, added[j].id) >= 0)) j += 1;
      insertRun(view, at, added.slice(i, j).map(confirmedEntry));
      i = j;
    }
  }

  function confirmInPlace(view, entry, msg) {
    entry.key = msg.seq;
    entry.msg = msg;
    entry.pending = false;
    entry.failed = false;
    entry.grouped = undefined; // rebuilt: the pending element is replaced where it stands
    place(entry, view.entries[view.confirmed - 1] || null);
    view.confirmed += 1;
    const next = view.entries[view.confirmed];
    if (next) place(next, entry);
  }

  /** The pending part follows the outbox: removed, failed/pending again, or new ones appended. */
  function syncPending(view) {
    const items = store.outboxOf(view.room);
    const want = new Map(items.map((o) => [`p:${o.id}`, o]));
    for (let k = view.entries.length - 1; k >= view.confirmed; k--) {
      if (!want.has(view.entries[k].key)) removeAt(view, k);
    }
    for (let k = view.confirmed; k < view.entries.length; k++) {
      const e = view.entries[k];
      const o = want.get(e.key);
      want.delete(e.key);
      const failed = o.state === "failed";
      if (e.failed !== failed || e.msg.error !== o.error) {
        e.failed = failed;
        e.pending = !failed;
        e.msg = { ...o, sender_id: me() };
        e.grouped = undefined; // rebuilt in place
        place(e, view.entries[k - 1] || null);
        const next = view.entries[k + 1];
        if (next) place(next, e);
      }
    }
    const fresh = [...want.values()].map(pendingEntry);
    if (fresh.length) insertRun(view, view.entries.length, fresh);
    return fresh.length > 0;
  }

  // ---------- scrolling ----------

  const atBottom = () => {
    const s = dom.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < BOTTOM_SLACK_PX;
  };

  /**
   * Whether the view follows the newest message. Kept apart from atBottom():
   * messages off screen have an estimated height (content-visibility) that
   * becomes their real one when they come into view, which can grow the list
   * below the reader without any scroll; a ResizeObserver then scrolls down
   * again. Only a scroll (the reader's, or ours) changes it.
   */
  let stuck = true;
  const stick = () => {
    dom.scroller.scrollTop = dom.scroller.scrollHeight;
    stuck = true;
  };
  const resized = new ResizeObserver(() => {
    const sc = dom.scroller;
    // Following: all the way down, not just within the slack of atBottom().
    if (stuck) {
      if (sc.scrollHeight - sc.scrollTop - sc.clientHeight > 1) sc.scrollTop = sc.scrollHeight;
    } else keepAnchor();
  });

  /**
   * While reading (not following), the message at the top of the view stays
   * where it is when heights above it become known or a page lands above:
   * done here rather than by the browser's scroll anchoring (off for the
   * scroller), which does not see into lists whose heights are estimates.
   */
  let anchor = null; // {el, id, top}
  function takeAnchor() {
    const box = dom.scroller.getBoundingClientRect();
    anchor = null;
    // The middle of the view: a page landing above regroups the message at
    // its seam, which then changes height; what is below the seam holds still.
    for (const dy of [box.height / 2, 80, 40, 4]) {
      const hit = document.elementFromPoint(box.left + box.width / 2, box.top + dy);
      let el = hit && hit.closest ? hit.closest("li.msg, li.day") : null;
      if (el && el.classList.contains("day")) el = el.nextElementSibling;
      if (el && dom.list.contains(el)) {
        anchor = { el, id: el.dataset.id, top: el.getBoundingClientRect().top };
        return;
      }
    }
  }
  function keepAnchor() {
    if (!anchor) return;
    // Regrouping replaces an element: follow the message, not the node.
    if (!anchor.el.isConnected) {
      anchor.el = dom.list.querySelector(`li.msg[data-id="${CSS.escape(anchor.id || "")}"]`);
      if (!anchor.el) return void (anchor = null);
    }
    const d = anchor.el.getBoundingClientRect().top - anchor.top;
    if (Math.abs(d) >= 1) dom.scroller.scrollTop += d;
  }
  resized.observe(dom.scroller);
  resized.observe(dom.list);

  /**
   * Runs a change to the shown list keeping today's rules: following the
   * newest stays following; content added above keeps what is read in place;
   * `fn` returns {appended, toBottom}: `toBottom` scrolls down (own message).
   * Reads no layout unless content goes above the reader (`above`): a burst
   * of messages then costs one layout per frame, not one per message; the
   * scroll down happens once, before the next paint.
   */
  function changeShown(fn, { above = false } = {}) {
    const s = dom.scroller;
    const wasStuck = stuck;
    if (above && !wasStuck) takeAnchor();
    const result = fn();
    if (result.toBottom || wasStuck) {
      stuck = true;
      afterFrame();
    } else if (above) keepAnchor();
    if (result.appended && !wasStuck && !result.toBottom) dom.jump.hidden = false;
    renderChrome();
    return result;
  }

  let frameQueued = false;
  /** Before the next paint: follow the newest message if following, and fill the view. */
  function afterFrame() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(() => {
      frameQueued = false;
      if (stuck) dom.scroller.scrollTop = dom.scroller.scrollHeight;
      fillUp();
    });
  }

  /** Asks for older pages while the list does not fill the view. */
  function fillUp() {
    const r = store.currentRoom();
    const s = dom.scroller;
    if (r && r.hasOlder && r.lastSeq !== null && !r.loadingOlder && s.scrollHeight <= s.clientHeight + 40) {
      onWantOlder(r.name);
    }
  }

  // ---------- what is around the list ----------

  function renderChrome() {
    const r = store.currentRoom();
    const empty = dom.empty;
    const hasPending = r ? store.state.outbox.some((o) => o.room_id === r.name) : false;
    let text = null;
    if (!r) text = "Join a room from the side list to start chatting.";
    else if (r.error) text = `Could not open #${r.name}: ${r.error}`;
    else if (r.lastSeq === null && !r.bySeq.size) text = isOpen() ? "Loading messages…" : "Messages will load once connected.";
    else if (!r.bySeq.size && !hasPending) text = `This is the start of #${r.name}. Say hello!`;
    empty.hidden = text === null;
    if (text !== null && empty.textContent !== text) empty.textContent = text;
    dom.refused.hidden = !r || r.error === null;

    const note = dom.note;
    if (!r || r.lastSeq === null || !r.bySeq.size) {
      note.hidden = true;
    } else {
      note.hidden = false;
      const t = r.loadingOlder
        ? "Loading older messages…"
        : r.hasOlder
          ? "Scroll up for older messages"
          : `This is the beginning of #${r.name}.`;
      if (note.textContent !== t) note.textContent = t;
    }
  }

  // ---------- switching rooms ----------

  function show(room) {
    const s = dom.scroller;
    if (shown) shown.scrollTop = stuck || atBottom() ? null : s.scrollTop;
    const view = room === null ? null : views.get(room) || newView(room);
    const list = view ? view.list : template;
    if (list !== dom.list) {
      dom.list.removeAttribute("id");
      dom.list.classList.add("away");
      dom.list.setAttribute("aria-hidden", "true");
      if (!list.isConnected) template.parentNode.append(list);
      list.classList.remove("away");
      list.removeAttribute("aria-hidden");
      list.id = "messages";
      resized.unobserve(dom.list);
      resized.observe(list);
      dom.list = list;
    }
    shown = view;
    if (view) flushQueued(view);
    if (view && view.scrollTop !== null) {
      s.scrollTop = view.scrollTop;
      stuck = false;
      takeAnchor();
    } else stick();
    dom.jump.hidden = true;
    renderChrome();
    fillUp();
  }

  function flushQueued(view) {
    const queued = view.queued;
    view.queued = [];
    // As they are now: one may have been edited while the room was not shown.
    const held = store.room(view.room)?.bySeq;
    for (const added of queued) addMessages(view, held ? added.map((m) => held.get(m.seq) || m) : added);
    if (view.outboxStale) {
      view.outboxStale = false;
      syncPending(view);
    }
  }

  // ---------- store events ----------

  store.subscribe((ev) => {
    switch (ev.type) {
      case "current":
        show(ev.room);
        break;
      case "messages": {
        const view = views.get(ev.room);
        if (!view) break; // built from the store when first shown
        if (view !== shown) {
          view.queued.push(ev.added);
          break;
        }
        const lastBefore = view.entries[view.confirmed - 1];
        const first = view.entries[0];
        changeShown(
          () => {
            addMessages(view, ev.added);
            return { appended: view.entries[view.confirmed - 1] !== lastBefore };
          },
          { above: !!first && ev.added[0].seq < (first.pending || first.failed ? Infinity : first.key) },
        );
        afterFrame();
        break;
      }
      case "outbox": {
        const view = views.get(ev.room);
        if (!view) break;
        if (view !== shown) {
          view.outboxStale = true;
          break;
        }
        // A new pending message is the user's own: show it.
        changeShown(() => ({ appended: false, toBottom: syncPending(view) }));
        break;
      }
      case "name":
        for (const view of views.values()) rename(view, ev.id);
        break;
      case "changed": {
        // One element, rebuilt where it stands (in a room not shown too: it is one element).
        const view = views.get(ev.room);
        if (!view) break; // built from the store when first shown
        const at = confirmedIndex(view, ev.msg.seq);
        const entry = view.entries[at];
        if (at >= view.confirmed || entry.key !== ev.msg.seq) break;
        entry.msg = ev.msg;
        entry.grouped = undefined;
        if (view === shown) changeShown(() => (place(entry, view.entries[at - 1] || null), { appended: false }));
        else place(entry, view.entries[at - 1] || null);
        break;
      }
      case "identity": {
        // Signed in as someone else: which messages are "mine" changed everywhere.
        for (const view of views.values()) if (view !== shown) view.list.remove();
        const room = store.state.current;
        const old = shown;
        views.clear();
        shown = null;
        show(room);
        if (old && old.list !== dom.list) old.list.remove();
        break;
      }
      case "room":
        if (ev.room === store.state.current) {
          renderChrome();
          if (shown) afterFrame();
        }
        break;
      case "rooms":
        for (const [name, view] of views) {
          if (store.room(name)) continue;
          view.list.remove();
          views.delete(name);
        }
        break;
      case "connection":
        if (shown) for (let k = shown.confirmed; k < shown.entries.length; k++) refreshSendState(shown.entries[k]);
        renderChrome();
        break;
      default:
        break;
    }
  });

  function rename(view, id) {
    const sel = `li.msg[data-sender="${CSS.escape(id)}"]`;
    for (const li of view.list.querySelectorAll(sel)) senderHeader(li, { sender_id: id });
  }

  function refreshSendState(entry) {
    if (!entry.pending) return;
    const st = entry.el.querySelector(".send-state");
    const text = isOpen() ? "Sending…" : "Waiting for connection…";
    if (st && st.textContent !== text) st.textContent = text;
  }

  // ---------- the user ----------

  dom.scroller.addEventListener("scroll", () => {
    // A scroll down is due before the next paint: this event predates it.
    if (!(frameQueued && stuck)) stuck = atBottom();
    if (!stuck) takeAnchor();
    if (!dom.jump.hidden && stuck) dom.jump.hidden = true;
    const r = store.currentRoom();
    if (r && dom.scroller.scrollTop < LOAD_OLDER_PX) onWantOlder(r.name);
  });
  dom.jump.addEventListener("click", () => {
    stick();
    dom.jump.hidden = true;
  });

  return {
    show,
    setDivider,
    /** Whether the list follows its newest message (the reader is at the bottom). */
    atBottom: () => stuck || atBottom(),
    /** Scrolls to the newest message (after sending). */
    toBottom() {
      stick();
      dom.jump.hidden = true;
    },
  };
}

// The side list of rooms: one element per room, built when the list of rooms
// changes; a message in a room not shown only updates that room's badge.
// Also the total badge on the menu button (the page title: attention.js).

import { badgeText } from "./format.js";

export function createRoomList({ store, dom }) {
  const items = new Map(); // room name -> {li, a, badge}

  function build() {
    const frag = document.createDocumentFragment();
    items.clear();
    for (const r of store.state.rooms.values()) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `#${encodeURIComponent(r.name)}`;
      a.className = "room";
      const label = document.createElement("span");
      label.className = "room-name";
      label.textContent = r.name;
      a.append(label);
      li.append(a);
      frag.append(li);
      const item = { li, a, badge: null, refused: null };
      items.set(r.name, item);
      update(r.name);
    }
    dom.list.replaceChildren(frag);
    total();
  }

  /** The badge, the "current" mark and the "refused" mark of one room. */
  function update(name) {
    const item = items.get(name);
    const r = store.room(name);
    if (!item || !r) return;
    // The full name (a long one is cut with an ellipsis), and why the server refused it.
    const title = r.error === null ? `#${r.name}` : `#${r.name}: refused, ${r.error}`;
    if (item.a.title !== title) item.a.title = title;
    item.a.classList.toggle("refused", r.error !== null);
    if (r.error === null) {
      item.refused?.remove();
      item.refused = null;
    } else if (!item.refused) {
      item.refused = document.createElement("span");
      item.refused.className = "room-refused";
      item.refused.textContent = "refused";
      item.a.append(item.refused);
    }
    const isCurrent = name === store.state.current;
    if (isCurrent) item.a.setAttribute("aria-current", "page");
    else item.a.removeAttribute("aria-current");
    const unread = isCurrent ? 0 : r.unread;
    item.a.classList.toggle("has-unread", unread > 0);
    if (!unread) {
      item.badge?.remove();
      item.badge = null;
      return;
    }
    if (!item.badge) {
      item.badge = document.createElement("span");
      item.badge.className = "badge";
      item.a.append(item.badge);
    }
    const text = badgeText(unread);
    if (item.badge.textContent !== text) {
      item.badge.textContent = text;
      item.badge.setAttribute("aria-label", `${unread} unread`);
    }
  }

  function total() {
    const n = store.totalUnread();
    dom.total.hidden = !n;
    const text = badgeText(n);
    if (dom.total.textContent !== text) dom.total.textContent = text;
  }

  store.subscribe((ev) => {
    if (ev.type === "rooms") build();
    else if (ev.type === "room") {
      update(ev.room);
      total();
    } else if (ev.type === "current") {
      if (ev.prev !== null) update(ev.prev);
      if (ev.room !== null) update(ev.room);
      total();
    }
  });

  return { build };
}

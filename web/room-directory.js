// The room directory: a dialog listing the rooms that exist (list_rooms),
// newest activity first, paged with "More", filtered as you type (over the
// rooms fetched so far), joined by a click or Enter on a room.

import { relativeTime } from "./format.js";

const PAGE = 50;
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

/** `conn`: connection.js; `onJoin(name)`: join and show a room; `dom`: the dialog's parts. */
export function createRoomDirectory({ conn, onJoin, dom }) {
  let rooms = [];
  let cursor = "";
  let loading = false;

  function render() {
    const q = dom.filter.value.trim().toLowerCase();
    const shown = rooms.filter((r) => !q || r.room_id.toLowerCase().includes(q));
    const now = new Date();
    const items = shown.map((r) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "dir-room";
      b.dataset.room = r.room_id;
      const name = document.createElement("span");
      name.className = "dir-name";
      name.textContent = `# ${r.room_id}`;
      const meta = document.createElement("span");
      meta.className = "dir-meta";
      const at = new Date(r.last_message_at);
      const n = Number(r.last_seq) || 0;
      meta.textContent = `${r.members || 0} online · active ${relativeTime(at, now, (d) => dateFmt.format(d))} · ${n} message${n === 1 ? "" : "s"}`;
      b.append(name, meta);
      li.append(b);
      return li;
    });
    dom.list.replaceChildren(...items);
    dom.more.hidden = !cursor;
    dom.status.textContent = loading
      ? "Loading rooms…"
      : shown.length
        ? `${shown.length} room${shown.length === 1 ? "" : "s"}${cursor ? " (more to load)" : ""}`
        : q
          ? "No room matches."
          : "No rooms yet.";
  }

  async function load(first) {
    if (loading) return;
    loading = true;
    if (first) {
      rooms = [];
      cursor = "";
    }
    render();
    try {
      // A page may come back short, even empty, with a cursor (docs/protocol.md): go on until some rooms come.
      do {
        const a = await conn.call("list_rooms", { limit: PAGE, cursor });
        const page = a.room_list || {};
        const seen = new Set(rooms.map((r) => r.room_id));
        for (const r of page.rooms || []) if (typeof r.room_id === "string" && !seen.has(r.room_id)) rooms.push(r);
        cursor = typeof page.next_cursor === "string" ? page.next_cursor : "";
        if ((page.rooms || []).length) break;
      } while (cursor);
      loading = false;
      render();
    } catch (e) {
      loading = false;
      render();
      dom.status.textContent = `Could not list rooms: ${e.message || e.code}`;
    }
  }

  function open() {
    dom.filter.value = "";
    dom.dialog.showModal();
    dom.filter.focus();
    load(true);
  }

  dom.filter.addEventListener("input", render);
  dom.filter.addEventListener("keydown", (ev) => {
    // A search field takes the first Escape to clear itself: the dialog closes on it instead.
    if (ev.key === "Escape") {
      ev.preventDefault();
      dom.dialog.close();
      return;
    }
    // Enter in the filter joins the first room shown, or the room typed.
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const first = dom.list.querySelector("button.dir-room");
    const name = first ? first.dataset.room : dom.filter.value.trim();
    if (name) join(name);
  });
  dom.list.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.dir-room");
    if (b) join(b.dataset.room);
  });
  dom.more.addEventListener("click", () => load(false));
  dom.close.addEventListener("click", () => dom.dialog.close());

  function join(name) {
    dom.dialog.close();
    onJoin(name);
  }

  return { open };
}

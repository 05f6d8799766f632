// Who is online in the shown room (the header's popover) and who is typing.
// Redrawn only for events of the shown room, and for renames of those listed.

import { typingText } from "./format.js";
import { youBadge } from "./message-list.js";

export function createPresenceView({ store, dom }) {
  // The own id is read at each use: signing in (--auth jwt) may change it.
  const me = () => store.state.userId;

  /** Display names of a set of ids, the own user first, then alphabetical. */
  function sortedNames(ids) {
    return [...ids]
      .map((id) => ({ id, name: store.nameOf(id) }))
      .sort((a, b) => (b.id === me()) - (a.id === me()) || a.name.localeCompare(b.name));
  }

  function renderPresence() {
    const r = store.currentRoom();
    const box = dom.presence;
    if (!r || !r.online) {
      box.hidden = true;
      box.open = false;
      return;
    }
    box.hidden = false;
    const people = sortedNames(r.online);
    dom.count.textContent = `${people.length} online`;
    const summary = box.querySelector("summary");
    const all = people.map((p) => (p.id === me() ? `${p.name} (you)` : p.name));
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
      if (p.id === me()) li.append(youBadge());
      frag.append(li);
    }
    dom.list.replaceChildren(frag);
  }

  function renderTyping() {
    const r = store.currentRoom();
    const text = typingText(r ? [...r.typing].map(store.nameOf) : []);
    if (dom.typing.textContent !== text) dom.typing.textContent = text; // unchanged text is not announced again
  }

  store.subscribe((ev) => {
    const r = store.currentRoom();
    if (ev.type === "current" || ev.type === "identity") {
      renderPresence();
      renderTyping();
    } else if (ev.type === "presence" && ev.room === store.state.current) renderPresence();
    else if (ev.type === "typing" && ev.room === store.state.current) renderTyping();
    else if (ev.type === "name" && r) {
      if (r.online?.has(ev.id)) renderPresence();
      if (r.typing.has(ev.id)) renderTyping();
    }
  });
}

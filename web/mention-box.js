// @mention completion in the composer: typing "@" lists the room's people
// (online now, and who wrote there); arrows move, Enter or Tab completes,
// Escape closes. A textarea may not be a combobox (ARIA in HTML), so it stays
// a textbox that owns the listbox (aria-controls) and points at the option
// in focus (aria-activedescendant); the number of matches is read out.

import { completeMention, completions, mentionQuery } from "./mention.js";

/** `input`: the composer; `list`: its listbox; `announce(text)`: for screen readers. */
export function createMentionBox({ store, input, list, announce }) {
  let open = null; // {start, options, active} while the list is shown

  /** The room's people: online, then who wrote there, never the user. */
  function roomPeople() {
    const r = store.currentRoom();
    if (!r) return [];
    const ids = new Set(r.online || []);
    for (const m of r.bySeq.values()) ids.add(m.sender_id);
    ids.delete(store.state.userId);
    return [...ids].filter((id) => typeof id === "string").map((id) => ({ id, name: store.nameOf(id) }));
  }

  function close() {
    if (!open) return;
    open = null;
    list.hidden = true;
    list.replaceChildren();
    input.removeAttribute("aria-activedescendant");
  }

  function render() {
    list.replaceChildren();
    open.options.forEach((p, i) => {
      const li = document.createElement("li");
      li.id = `mention-opt-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === open.active));
      li.dataset.index = String(i);
      li.textContent = p.name;
      if (p.name !== p.id) {
        const id = document.createElement("span");
        id.className = "mention-id";
        id.textContent = ` ${p.id.slice(0, 8)}`;
        li.append(id);
      }
      list.append(li);
    });
    list.hidden = false;
    input.setAttribute("aria-activedescendant", `mention-opt-${open.active}`);
  }

  function update() {
    const q = mentionQuery(input.value, input.selectionStart);
    const options = q ? completions(q.query, roomPeople()) : [];
    // A name typed out whole needs no list (Enter then sends).
    const whole = options.length === 1 && options[0].name.toLowerCase() === q.query.toLowerCase();
    if (!options.length || whole) {
      close();
      return;
    }
    const changed = !open || open.options.length !== options.length;
    open = { start: q.start, options, active: 0 };
    render();
    if (changed) announce(`${options.length} ${options.length === 1 ? "person" : "people"} to mention, arrows to choose`);
  }

  function choose(i) {
    const p = open.options[i];
    const done = completeMention(input.value, open.start, input.selectionStart, p);
    close();
    input.value = done.text;
    input.setSelectionRange(done.caret, done.caret);
    input.dispatchEvent(new Event("input"));
    close(); // the input event must not reopen it for the name just written
    announce(`${p.name} mentioned`);
  }

  input.addEventListener("input", update);
  input.addEventListener("click", update);
  input.addEventListener("blur", close);
  // A click on an option must not blur the composer first.
  list.addEventListener("mousedown", (ev) => ev.preventDefault());
  list.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-index]");
    if (li && open) choose(Number(li.dataset.index));
  });

  return {
    /** Handles a key in the composer; true when the list used it. */
    onKey(ev) {
      if (!open || ev.isComposing) return false;
      const n = open.options.length;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        open.active = (open.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        render();
      } else if (ev.key === "Enter" || ev.key === "Tab") {
        if (ev.shiftKey) return false;
        choose(open.active);
      } else if (ev.key === "Escape") {
        close();
      } else return false;
      ev.preventDefault();
      ev.stopPropagation();
      return true;
    },
    close,
  };
}

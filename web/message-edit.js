// Editing and deleting the own messages in place: the inline editor (Enter
// saves, Escape cancels, a refusal keeps the text and shows the server's
// reason) and the delete confirmation. Works on the elements message-list.js
// builds; the saved message comes back through the store (message_changed)
// and replaces the element, which ends the editing. An element replaced for
// another reason (the message edited or deleted in another tab or device,
// or regrouped) takes the editor over with the text typed so far (`adopt`);
// a deletion is said in place.

import { contentProblem } from "./format.js";

const DELETED_NOTE = "This message was deleted elsewhere. Your text is kept here to copy; Escape closes it.";

/**
 * `chat`: chat.js (editMessage, deleteMessage); `room()`: the shown room's
 * name; `contentLimit()`: the server's content limit in bytes.
 */
export function createMessageEdit({ chat, room, contentLimit }) {
  /** The message element being edited -> its editor {li, text, box, hint, saving, deleted}. */
  const editors = new Map();

  function problemEl(li) {
    let p = li.querySelector(".edit-error");
    if (!p) {
      p = document.createElement("p");
      p.className = "edit-error";
      p.setAttribute("role", "alert");
      li.querySelector(".body").append(p);
    }
    return p;
  }

  /** Puts the editor of `ed` into its element `ed.li`, over the message's text. */
  function mount(ed) {
    ed.text = ed.li.querySelector(".text");
    ed.li.classList.add("editing");
    ed.text.hidden = true;
    ed.text.after(ed.box, ed.hint);
    editors.set(ed.li, ed);
  }

  function edit(li) {
    if (li.classList.contains("editing")) return;
    const seq = Number(li.dataset.seq);
    const name = room();
    if (!li.querySelector(".text") || !seq || name === null) return;
    const box = document.createElement("textarea");
    box.className = "edit-box";
    box.rows = 2;
    box.value = li.querySelector(".text").textContent;
    box.setAttribute("aria-label", "Edit message");
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Enter to save · Escape to cancel";
    const ed = { li, text: null, box, hint, saving: false, deleted: false };
    mount(ed);
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
    const done = () => {
      editors.delete(ed.li);
      box.remove();
      hint.remove();
      ed.li.querySelector(".edit-error")?.remove();
      ed.text.hidden = false;
      ed.li.classList.remove("editing");
      const again = ed.li.querySelector('button[data-action="edit"]');
      if (again) again.focus();
      else document.getElementById("content")?.focus(); // deleted: nothing to edit any more
    };
    box.addEventListener("keydown", async (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        done();
      } else if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        if (ed.deleted) return void (problemEl(ed.li).textContent = DELETED_NOTE);
        const value = box.value.replace(/^\s*\n|\s+$/g, "");
        if (value === ed.text.textContent) return done();
        const problem = contentProblem(value, contentLimit());
        if (problem) return void (problemEl(ed.li).textContent = problem);
        box.readOnly = true;
        ed.saving = true;
        try {
          // The saved message replaces the element (the editor moves over): then editing ends.
          await chat.editMessage(name, seq, value);
          done();
        } catch (e) {
          box.readOnly = false;
          ed.saving = false;
          problemEl(ed.li).textContent = `Not saved: ${(e && (e.message || e.code)) || "no answer"}`;
          box.focus();
        }
      }
    });
  }

  /**
   * The list replaced element `old`, being edited, with `li` (message-list.js):
   * the editor moves over with what was typed, its focus (`focused`: it had
   * it) and selection kept. While saving, the new element is most likely
   * the saved message: nothing is said.
   */
  function adopt(old, li, focused) {
    const ed = editors.get(old);
    if (!ed) return;
    editors.delete(old);
    const { selectionStart, selectionEnd } = ed.box;
    const was = ed.text.textContent;
    const problem = old.querySelector(".edit-error");
    ed.li = li;
    mount(ed);
    if (focused) {
      ed.box.focus();
      ed.box.setSelectionRange(selectionStart, selectionEnd);
    }
    if (li.classList.contains("deleted")) {
      ed.deleted = true;
      problemEl(li).textContent = DELETED_NOTE;
    } else if (ed.saving) {
      // The answer ends the editing (or says why it was not saved).
    } else if (ed.text.textContent !== was) {
      problemEl(li).textContent = "Edited elsewhere meanwhile: saving replaces that text.";
    } else if (problem) problemEl(li).textContent = problem.textContent;
  }

  function confirmDelete(li) {
    const actions = li.querySelector(".msg-actions");
    const seq = Number(li.dataset.seq);
    const name = room();
    if (!actions || !seq || name === null || li.querySelector(".confirm-delete")) return;
    const ask = document.createElement("div");
    ask.className = "confirm-delete";
    ask.setAttribute("role", "group");
    ask.setAttribute("aria-label", "Delete this message?");
    const q = document.createElement("span");
    q.textContent = "Delete this message? ";
    const yes = document.createElement("button");
    yes.type = "button";
    yes.className = "btn small danger";
    yes.textContent = "Delete";
    const no = document.createElement("button");
    no.type = "button";
    no.className = "btn small";
    no.textContent = "Cancel";
    ask.append(q, yes, " ", no);
    actions.hidden = true;
    actions.after(ask);
    no.focus();
    const close = () => {
      ask.remove();
      actions.hidden = false;
      actions.querySelector('button[data-action="delete"]')?.focus();
    };
    no.addEventListener("click", close);
    ask.addEventListener("keydown", (ev) => ev.key === "Escape" && close());
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await chat.deleteMessage(name, seq);
        // The marker that replaced the message has nothing to focus.
        if (!li.isConnected && document.activeElement === document.body) document.getElementById("content")?.focus();
      } catch (e) {
        yes.disabled = false;
        problemEl(li).textContent = `Not deleted: ${(e && (e.message || e.code)) || "no answer"}`;
      }
    });
  }

  /** A click on a message's Edit or Delete button. */
  function onAction(btn) {
    const li = btn.closest("li.msg");
    if (!li) return false;
    if (btn.dataset.action === "edit") edit(li);
    else if (btn.dataset.action === "delete") confirmDelete(li);
    else return false;
    return true;
  }

  return { onAction, adopt };
}

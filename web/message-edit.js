// Editing and deleting the own messages in place: the inline editor (Enter
// saves, Escape cancels, a refusal keeps the text and shows the server's
// reason) and the delete confirmation. Works on the elements message-list.js
// builds; the saved message comes back through the store (message_changed)
// and replaces the element, which ends the editing.

import { contentProblem } from "./format.js";

/** `chat`: chat.js (editMessage, deleteMessage); `room()`: the shown room's name. */
export function createMessageEdit({ chat, room }) {
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

  function focusEdit(seq) {
    document.querySelector(`#messages li.msg[data-seq="${seq}"] button[data-action="edit"]`)?.focus();
  }

  function edit(li) {
    if (li.classList.contains("editing")) return;
    const text = li.querySelector(".text");
    const seq = Number(li.dataset.seq);
    const name = room();
    if (!text || !seq || name === null) return;
    li.classList.add("editing");
    const box = document.createElement("textarea");
    box.className = "edit-box";
    box.rows = 2;
    box.value = text.textContent;
    box.setAttribute("aria-label", "Edit message");
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Enter to save · Escape to cancel";
    text.hidden = true;
    text.after(box, hint);
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
    const done = () => {
      box.remove();
      hint.remove();
      li.querySelector(".edit-error")?.remove();
      text.hidden = false;
      li.classList.remove("editing");
      li.querySelector('button[data-action="edit"]')?.focus();
    };
    box.addEventListener("keydown", async (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        done();
      } else if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        const value = box.value.replace(/^\s*\n|\s+$/g, "");
        if (value === text.textContent) return done();
        const problem = contentProblem(value);
        if (problem) return void (problemEl(li).textContent = problem);
        box.readOnly = true;
        try {
          await chat.editMessage(name, seq, value);
          // The element was rebuilt from the store; this one is gone: focus goes where it was.
          if (li.isConnected) done();
          else focusEdit(seq);
        } catch (e) {
          box.readOnly = false;
          problemEl(li).textContent = `Not saved: ${(e && (e.message || e.code)) || "no answer"}`;
          box.focus();
        }
      }
    });
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

  return { onAction };
}

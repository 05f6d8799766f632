// The chat basics of the web client: editing and deleting the own messages,
// renames seen at once, the first-visit name prompt, the composer's byte
// limit, room names refused with the reason, the connection banner.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import {
  Client,
  Gate,
  SCREENSHOTS,
  SplitGate,
  openChat,
  sendText,
  useGateAndBrowser,
  waitConnected,
  waitMessage,
} from "./lib.mjs";

const fx = useGateAndBrowser();

/** The confirmed message element of the page with this text (a locator). */
const msg = (page, text) => page.locator("#messages li.msg:not(.pending)", { hasText: text });

test("an own message edited and deleted: seen live by another page, and in history after a reload", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "edits" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "edits" });
  await sendText(ada, "first draft");
  await sendText(ada, "to be deleted");
  await waitMessage(bob, "to be deleted");
  await sendText(bob, "a reply from Bob");
  await waitMessage(ada, "a reply from Bob");

  // Edit and Delete are offered on her own messages only.
  assert.equal(await msg(ada, "a reply from Bob").getByRole("button", { name: "Edit message" }).count(), 0);
  assert.equal(await msg(bob, "first draft").getByRole("button", { name: "Edit message" }).count(), 0);

  const seqBefore = await msg(bob, "first draft").getAttribute("data-seq");
  const bobOther = msg(bob, "a reply from Bob");
  const bobOtherEl = await bobOther.elementHandle();

  // Escape cancels, keeping the text.
  await msg(ada, "first draft").getByRole("button", { name: "Edit message" }).click();
  const box = ada.getByRole("textbox", { name: "Edit message" });
  assert.equal(await box.evaluate((e) => e === document.activeElement), true);
  await box.fill("never saved");
  await box.press("Escape");
  await msg(ada, "first draft").waitFor();
  assert.equal(await box.count(), 0);

  // Enter saves; Bob sees it in place, marked edited, at the same seq.
  await msg(ada, "first draft").getByRole("button", { name: "Edit message" }).click();
  await box.fill("final wording");
  await box.press("Enter");
  await waitMessage(bob, "final wording");
  const edited = msg(bob, "final wording");
  assert.equal(await edited.getAttribute("data-seq"), seqBefore);
  assert.match(await edited.locator(".edited").getAttribute("title"), /^Edited /);
  assert.equal(await bob.locator("#messages li.msg .text", { hasText: "first draft" }).count(), 0);
  // Only that element was redrawn: Bob's own message is the same node.
  assert.equal(await bobOtherEl.evaluate((e) => e.isConnected), true);
  await waitMessage(ada, "final wording");

  // Delete asks first; then both pages show the marker in place.
  await msg(ada, "to be deleted").getByRole("button", { name: "Delete message" }).click();
  await ada.getByRole("group", { name: "Delete this message?" }).getByRole("button", { name: "Delete" }).click();
  await bob.locator("#messages li.msg.deleted .text", { hasText: "message deleted" }).waitFor();
  await ada.locator("#messages li.msg.deleted .text", { hasText: "message deleted" }).waitFor();
  assert.equal(await bob.locator("#messages li.msg .text", { hasText: "to be deleted" }).count(), 0);

  // After a reload, history shows the same.
  await bob.reload();
  await waitConnected(bob);
  await waitMessage(bob, "final wording");
  await bob.locator("#messages li.msg.deleted .text", { hasText: "message deleted" }).waitFor();
  assert.equal(await msg(bob, "final wording").locator(".edited").count(), 1);

  assert.deepEqual(ada.errors || [], []);
  assert.deepEqual(bob.errors || [], []);
  await ada.context().close();
  await bob.context().close();
});

test("an edit missed while disconnected is caught up after the reconnect", async () => {
  // A system of its own: the test kills it, and a failure must not leave
  // the shared one dead for the tests after it.
  const gate = await Gate.start();
  try {
    const page = await openChat(fx.browser, gate, { name: "Cy", room: "catchup-edits" });
    const writer = await Client.open(gate.url);
    await writer.say("catchup-edits", "writer", "original text");
    await waitMessage(page, "original text");
    const seq = await msg(page, "original text").getAttribute("data-seq");

    // The page loses its network (it drops its socket on the offline event,
    // whether or not a close gets through) and cannot reconnect while the edit is made.
    writer.close();
    await page.context().setOffline(true);
    await gate.kill("SIGKILL");
    await page.locator('#status:is([data-state="reconnecting"], [data-state="offline"])').waitFor({ state: "attached" });
    await gate.restart();
    const editor = await Client.open(gate.url);
    await editor.request({ edit_message: { room_id: "catchup-edits", seq, sender_id: "writer", content: "edited while away" } });
    assert.equal(await msg(page, "original text").count(), 1);
    await page.context().setOffline(false);
    await page.evaluate(() => dispatchEvent(new Event("online")));
    await waitMessage(page, "edited while away", 20000);
    editor.close();
    await page.context().close();
  } finally {
    await gate.stop();
  }
});

test("someone else's message cannot be edited: a forged frame is refused", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "forged" });
  await sendText(ada, "Ada's words");
  await waitMessage(ada, "Ada's words");
  const seq = await msg(ada, "Ada's words").getAttribute("data-seq");
  const mallory = await Client.open(fx.gate.url);
  await assert.rejects(
    mallory.request({ edit_message: { room_id: "forged", seq, sender_id: "mallory", content: "forged" } }),
    /PERMISSION_DENIED/,
  );
  await assert.rejects(
    mallory.request({ delete_message: { room_id: "forged", seq, sender_id: "mallory" } }),
    /PERMISSION_DENIED/,
  );
  const stored = (await mallory.history("forged")).find((m) => m.seq === seq);
  assert.equal(stored.content, "Ada's words");
  assert.equal(await msg(ada, "Ada's words").locator(".edited").count(), 0);
  mallory.close();
  await ada.context().close();
});

test("the server's own content limit is checked by the page; an edit the server refuses keeps the text and shows the reason", async () => {
  // A server with a smaller limit than the default: the page learns it (get_limits).
  const gate = await Gate.start({ args: ["--max-content-bytes", "100"] });
  try {
    const ada = await openChat(fx.browser, gate, { name: "Ada", room: "refused-edit" });
    const composer = ada.getByLabel("Message", { exact: true });
    await composer.fill("z".repeat(90));
    await ada.locator("#composer-count", { hasText: "90 / 100 bytes" }).waitFor();
    await composer.fill("z".repeat(150));
    await composer.press("Enter");
    await ada.locator("#composer-count", { hasText: "Too long: 150 bytes, the limit is 100" }).waitFor();
    assert.equal(await composer.inputValue(), "z".repeat(150));
    assert.deepEqual(await ada.evaluate(() => JSON.parse(localStorage.getItem("wsgate.outbox") || "[]")), []);

    await sendText(ada, "short enough");
    await waitMessage(ada, "short enough");
    await msg(ada, "short enough").getByRole("button", { name: "Edit message" }).click();
    const box = ada.getByRole("textbox", { name: "Edit message" });
    await box.fill("y".repeat(150));
    await box.press("Enter");
    await ada.locator(".edit-error", { hasText: "Too long: 150 bytes, the limit is 100" }).waitFor();
    // What only the server checks: its reason is shown, the text kept.
    const nul = "bad\u0000text";
    await box.fill(nul);
    await box.press("Enter");
    await ada.locator(".edit-error", { hasText: "Not saved: content must not contain U+0000 (NUL)" }).waitFor();
    assert.equal(await box.inputValue(), nul);
    assert.equal(await box.evaluate((e) => e === document.activeElement), true);
    assert.equal(await msg(ada, "short enough").locator(".edited").count(), 0);
    await ada.context().close();
  } finally {
    await gate.stop();
  }
});

test("a rename shows on the other page at once, without a reload", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "renames" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "renames" });
  await sendText(ada, "hi from Ada");
  await waitMessage(bob, "hi from Ada");
  await bob.locator("#messages li.msg .who", { hasText: "Ada" }).waitFor();
  await ada.getByLabel("Your display name").fill("Ada Lovelace");
  await ada.getByLabel("Your display name").press("Enter");
  await ada.locator("#name-note", { hasText: "Saved" }).waitFor();
  // Within a second of being stored: the user_renamed frame, not a lookup.
  await bob.locator("#messages li.msg .who", { hasText: "Ada Lovelace" }).waitFor({ timeout: 1000 });
  await ada.context().close();
  await bob.context().close();
});

test("a first visit asks for a display name, focused, once", async () => {
  const context = await fx.browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(`${fx.gate.url}/#welcome-room`);
  const field = page.getByLabel("Display name", { exact: true });
  await field.waitFor();
  assert.equal(await field.evaluate((e) => e === document.activeElement), true);
  assert.match(await field.inputValue(), /^guest-/);
  await waitConnected(page);
  await field.fill("Newcomer");
  await field.press("Enter");
  await page.locator("#welcome").waitFor({ state: "hidden" });
  assert.equal(await page.getByLabel("Your display name").inputValue(), "Newcomer");
  const writer = await Client.open(fx.gate.url);
  const id = await page.evaluate(() => JSON.parse(localStorage.getItem("wsgate.userId")));
  const u = await writer.request({ get_user: { user_id: id } });
  assert.equal(u.user.name, "Newcomer");
  await page.reload();
  await waitConnected(page);
  assert.equal(await page.locator("#welcome").isHidden(), true);
  writer.close();
  await context.close();
});

test("a 5,000-character paste is refused in place with the text kept; the counter shows bytes", async () => {
  const page = await openChat(fx.browser, fx.gate, { name: "Ada", room: "long-paste" });
  const box = page.getByLabel("Message", { exact: true });
  const long = "x".repeat(5000);
  await box.fill(long);
  await page.locator("#composer-count", { hasText: "5000 / 4096 bytes" }).waitFor();
  await box.press("Enter");
  await page.locator("#composer-count", { hasText: /Too long: 5000 bytes, the limit is 4096/ }).waitFor();
  assert.equal(await box.inputValue(), long);
  assert.equal(await box.getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#messages li.msg").count(), 0);
  assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem("wsgate.outbox") || "[]")), []);
  // Counted in bytes: 2,000 "é" are 4,000 bytes.
  await box.fill("é".repeat(2000));
  await page.locator("#composer-count", { hasText: "4000 / 4096 bytes" }).waitFor();
  await box.fill("short");
  assert.equal(await page.locator("#composer-count").textContent(), "");
  await box.press("Enter");
  await waitMessage(page, "short");
  await page.context().close();
});

test("a room name of 100 'é' is refused with the reason, at the form and from the server", async () => {
  const page = await openChat(fx.browser, fx.gate, { name: "Ada", room: "general" });
  const long = "é".repeat(100);
  await page.getByLabel("Join a room").fill(long);
  await page.getByLabel("Join a room").press("Enter");
  await page.locator("#join-note", { hasText: "at most 128 bytes; this one is 200" }).waitFor();
  assert.equal(await page.getByLabel("Join a room").inputValue(), long);
  assert.equal(await page.locator(`#room-list a`).count(), 1);
  // Through the URL, the server's refusal is shown instead of "Loading messages…".
  await page.evaluate((n) => (location.hash = encodeURIComponent(n)), long);
  await page.locator("#empty", { hasText: /Could not open #.*room_id is 200 bytes long; the limit is 128/ }).waitFor();
  await page.context().close();
});

test("the message pane shows a banner while the upstream is away, and clears it after", async () => {
  const split = await SplitGate.start();
  try {
    const page = await openChat(fx.browser, split, { name: "Uma", room: "banner" });
    assert.equal(await page.locator("#conn-banner").isHidden(), true);
    await split.killServer();
    const banner = page.locator("#conn-banner");
    await banner.waitFor();
    assert.match(await banner.textContent(), /Server unavailable/);
    // Retry now while the server is still away: the banner stays.
    await banner.getByRole("button", { name: "Retry now" }).click();
    await page.locator("#status[data-state=\"reconnecting\"]").waitFor({ state: "attached" });
    assert.equal(await banner.isVisible(), true);
    await split.startServer();
    await banner.waitFor({ state: "hidden", timeout: 20000 });
    assert.equal(await page.locator("#status").getAttribute("data-state"), "connected");
    await page.context().close();
  } finally {
    await split.stop();
  }
});

test("the room directory lists a room another page just created, filters, and joins it", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "dir-home" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "dir-created-by-bob" });
  await sendText(bob, "first message here");
  await waitMessage(bob, "first message here");

  await ada.getByRole("button", { name: "Browse rooms" }).click();
  const dialog = ada.getByRole("dialog", { name: "Browse rooms" });
  const filter = dialog.getByLabel("Filter rooms");
  assert.equal(await filter.evaluate((e) => e === document.activeElement), true);
  const entry = dialog.getByRole("button", { name: /# dir-created-by-bob/ });
  await entry.waitFor();
  assert.match(await entry.textContent(), /1 online · active just now · 1 message$/);
  await filter.fill("created-by");
  assert.equal(await dialog.locator("button.dir-room").count(), 1);
  await filter.press("Enter");
  await ada.waitForFunction(() => location.hash === "#dir-created-by-bob");
  await waitMessage(ada, "first message here");
  assert.equal(await dialog.isHidden(), true);
  await ada.context().close();
  await bob.context().close();
});

test("the room directory pages with More", async () => {
  const c = await Client.open(fx.gate.url);
  // More rooms than one page (50): the oldest come with "More".
  for (let i = 0; i < 55; i++) await c.say(`paged-${String(i).padStart(2, "0")}`, "seeder", "hello");
  const page = await openChat(fx.browser, fx.gate, { name: "Ada", room: "paged-home" });
  await page.getByRole("button", { name: "Browse rooms" }).click();
  const dialog = page.getByRole("dialog", { name: "Browse rooms" });
  const more = dialog.getByRole("button", { name: "More" });
  await more.waitFor();
  assert.equal(await dialog.locator("button.dir-room").count(), 50);
  // Newest activity first: the last room written to leads.
  assert.equal(await dialog.locator("button.dir-room").first().getAttribute("data-room"), "paged-54");
  await more.click();
  await dialog.getByRole("button", { name: /# paged-00/ }).waitFor();
  const names = await dialog.locator("button.dir-room").evaluateAll((bs) => bs.map((b) => b.dataset.room));
  assert.equal(new Set(names).size, names.length, "no room twice");
  assert.ok(names.length >= 55);
  await dialog.getByLabel("Filter rooms").fill("paged-0");
  assert.equal(await dialog.locator("button.dir-room").count(), 10);
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  c.close();
  await page.context().close();
});

test("a room the server refuses is marked with the reason, not joined again on reconnect, and can be tried again or removed", async () => {
  // One stream may be in two rooms: the third is refused (RESOURCE_EXHAUSTED).
  const gate = await Gate.start({ args: ["--max-rooms-per-stream", "2"] });
  try {
    const context = await fx.browser.newContext({ viewport: { width: 1100, height: 720 } });
    await context.addInitScript(() => {
      if (!localStorage.getItem("wsgate.userName")) localStorage.setItem("wsgate.userName", JSON.stringify("Ada"));
      // Every room this page asks to join, in order.
      window.__joins = [];
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        try {
          const f = JSON.parse(data);
          if (f.join_room) window.__joins.push(f.join_room.room_id);
        } catch {
          /* not JSON: not ours to look at */
        }
        return send.call(this, data);
      };
    });
    const page = await context.newPage();
    page.on("pageerror", (e) => (page.errors ||= []).push(e));
    await page.goto(`${gate.url}/#one`);
    await waitConnected(page);
    const join = async (name) => {
      await page.getByLabel("Join a room").fill(name);
      await page.getByLabel("Join a room").press("Enter");
      await page.waitForFunction((n) => location.hash === `#${n}`, name);
    };
    await join("two");
    await page.locator("#empty", { hasText: "This is the start of #two" }).waitFor();
    await join("three");

    const three = page.locator('#room-list a[href="#three"]');
    await three.locator(".room-refused", { hasText: "refused" }).waitFor();
    assert.match(await three.getAttribute("title"), /^#three: refused, this stream is in 2 rooms/);
    await page.locator("#empty", { hasText: "Could not open #three: this stream is in 2 rooms" }).waitFor();
    assert.equal(await page.getByLabel("Message", { exact: true }).isDisabled(), true);
    assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem("wsgate.rooms"))), ["one", "two"]);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SCREENSHOTS, "refused-room.png") });

    // A reconnect joins the other rooms again, not the refused one.
    await gate.restart();
    await page.waitForFunction(() => window.__joins.filter((r) => r === "two").length === 2, null, { timeout: 20000 });
    assert.deepEqual(await page.evaluate(() => window.__joins), ["one", "two", "three", "one", "two"]);
    await waitConnected(page);
    await three.locator(".room-refused").waitFor();

    // With room made, "Try again" gets in.
    await page.locator('#room-list a[href="#two"]').click();
    await page.getByRole("button", { name: "Leave room" }).click();
    await page.locator('#room-list a[href="#two"]').waitFor({ state: "detached" });
    await three.click();
    await page.getByRole("button", { name: "Try again" }).click();
    await page.locator("#empty", { hasText: "This is the start of #three" }).waitFor();
    assert.equal(await three.locator(".room-refused").count(), 0);
    assert.equal(await page.getByRole("button", { name: "Try again" }).isVisible(), false);
    await sendText(page, "in at last");
    await waitMessage(page, "in at last");

    // Refused again (a third room): "Remove from the list" takes it away.
    await join("four");
    await page.locator('#room-list a[href="#four"] .room-refused').waitFor();
    await page.getByRole("button", { name: "Remove from the list" }).click();
    await page.locator('#room-list a[href="#four"]').waitFor({ state: "detached" });
    assert.deepEqual(await page.locator("#room-list a .room-name").allTextContents(), ["one", "three"]);
    assert.deepEqual(page.errors || [], []);
    await context.close();
  } finally {
    await gate.stop();
  }
});

test("an edit in progress survives the message being edited or deleted on another device", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "edit-race" });
  const id = await ada.evaluate(() => JSON.parse(localStorage.getItem("wsgate.userId")));
  await sendText(ada, "original words");
  await waitMessage(ada, "original words");
  const seq = await msg(ada, "original words").getAttribute("data-seq");
  const phone = await Client.open(fx.gate.url); // Ada on another device
  const box = ada.getByRole("textbox", { name: "Edit message" });
  const focused = () => box.evaluate((e) => e === document.activeElement);

  // Edited elsewhere: the editor stays, with the text typed, focused; saving wins.
  await msg(ada, "original words").getByRole("button", { name: "Edit message" }).click();
  await box.fill("my new words");
  await phone.request({ edit_message: { room_id: "edit-race", seq, sender_id: id, content: "changed on the phone" } });
  await ada.locator(".edit-error", { hasText: "Edited elsewhere meanwhile" }).waitFor();
  assert.equal(await box.inputValue(), "my new words");
  assert.equal(await focused(), true);
  await box.press("Enter");
  await waitMessage(ada, "my new words");
  assert.equal(await box.count(), 0);
  assert.equal((await phone.history("edit-race")).find((m) => m.seq === seq).content, "my new words");

  // Deleted elsewhere: said in place, the text kept; Enter does not try to save it.
  await msg(ada, "my new words").getByRole("button", { name: "Edit message" }).click();
  await box.fill("words to keep");
  await phone.request({ delete_message: { room_id: "edit-race", seq, sender_id: id } });
  const note = ada.locator("#messages li.msg.deleted .edit-error", { hasText: "deleted elsewhere" });
  await note.waitFor();
  assert.equal(await box.inputValue(), "words to keep");
  assert.equal(await focused(), true);
  await box.press("Enter");
  assert.equal(await box.inputValue(), "words to keep");
  await box.press("Escape");
  assert.equal(await box.count(), 0);
  await ada.locator("#messages li.msg.deleted .text", { hasText: "message deleted" }).waitFor();
  assert.equal(await ada.locator("#messages .edit-error").count(), 0);
  assert.equal((await phone.history("edit-race")).find((m) => m.seq === seq).deleted, true);
  phone.close();
  assert.deepEqual(ada.errors || [], []);
  await ada.context().close();
});

// Attention: the title badge while the tab is hidden, desktop notifications
// (mentions, and rooms that notify every message), read positions and the
// "New messages" line across a reload and after messages arrived while the
// page was closed; drafts per room; @mention completion by keyboard.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, sendText, useGateAndBrowser, waitConnected, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

/**
 * A browser context whose pages can be told they are hidden
 * (`__setHidden(true)`: visibilityState and the visibilitychange event, as a
 * background tab) and record every `new Notification` in `__notes`.
 */
async function attentiveContext(name) {
  const context = await fx.browser.newContext({ viewport: { width: 1100, height: 720 } });
  await context.grantPermissions(["notifications"], { origin: fx.gate.url });
  await context.addInitScript((n) => {
    if (!localStorage.getItem("wsgate.userName")) localStorage.setItem("wsgate.userName", JSON.stringify(n));
    let hidden = false;
    Object.defineProperty(Document.prototype, "visibilityState", { get: () => (hidden ? "hidden" : "visible") });
    Object.defineProperty(Document.prototype, "hidden", { get: () => hidden });
    window.__setHidden = (h) => {
      hidden = h;
      document.dispatchEvent(new Event("visibilitychange"));
    };
    window.__notes = [];
    const Real = window.Notification;
    window.Notification = class extends Real {
      constructor(title, options) {
        window.__notes.push({ title, body: options && options.body });
        super(title, options);
      }
    };
  }, name);
  return context;
}

async function openIn(context, room) {
  const page = await context.newPage();
  page.on("pageerror", (e) => (page.errors ||= []).push(e));
  await page.goto(`${fx.gate.url}/#${room}`);
  await waitConnected(page);
  return page;
}

const unreadLineBefore = (page, text) =>
  page.waitForFunction(
    (t) => {
      const line = document.querySelector("#messages .unread-line");
      return line && line.closest("li.msg").querySelector(".text").textContent === t;
    },
    text,
    { timeout: 15000 },
  );

test("hidden tab: title badge, notifications of mentions and chosen rooms; read positions and the divider across visits", async () => {
  const context = await attentiveContext("Ada");
  const ada = await openIn(context, "lobby");
  const bob = await Client.open(fx.gate.url);
  await bob.setName("bob-1", "Bob");
  await bob.say("lobby", "bob-1", "first, while Ada watches");
  await waitMessage(ada, "first, while Ada watches");
  await ada.locator("#messages .who", { hasText: "Bob" }).waitFor();
  assert.equal(await ada.locator("#messages .unread-line").count(), 0, "nothing is new to a reader at the bottom");

  await ada.getByRole("button", { name: "Turn on notifications" }).click();
  await ada.locator('#notify[aria-pressed="true"]').waitFor();

  // Hidden: the open room's messages count in the title; a mention notifies.
  await ada.evaluate(() => window.__setHidden(true));
  await bob.say("lobby", "bob-1", "no mention here");
  await bob.say("lobby", "bob-1", "hey @ada, look");
  await ada.waitForFunction(() => document.title === "(2) wsgate chat");
  await ada.waitForFunction(() => window.__notes.length === 1);
  assert.deepEqual(await ada.evaluate(() => window.__notes), [
    { title: "Mention in #lobby", body: "Bob: hey @ada, look" },
  ]);
  assert.equal(await ada.locator("#messages li.msg.mentions-me .mention.me").textContent(), "@ada");

  // Back: the badge goes, the divider stands before the first message missed.
  await ada.evaluate(() => window.__setHidden(false));
  await ada.waitForFunction(() => document.title === "wsgate chat");
  await unreadLineBefore(ada, "no mention here");
  const seqs = (await bob.history("lobby")).map((m) => Number(m.seq));
  await ada.waitForFunction(
    (n) => (JSON.parse(localStorage.getItem("wsgate.lastRead")) || {}).lobby === n,
    Math.max(...seqs),
  );

  // A room chosen to notify every message does, a plain message included.
  await ada.getByRole("button", { name: "Notify every message" }).click();
  await ada.locator('#notify-room[aria-pressed="true"]').waitFor();
  await ada.evaluate(() => window.__setHidden(true));
  await bob.say("lobby", "bob-1", "plain news");
  await ada.waitForFunction(() => window.__notes.length === 2);
  assert.deepEqual((await ada.evaluate(() => window.__notes))[1], {
    title: "New message in #lobby",
    body: "Bob: plain news",
  });
  await ada.evaluate(() => window.__setHidden(false));
  await ada.waitForFunction(() => document.title === "wsgate chat");

  // A reload keeps the read position: nothing is new.
  await ada.reload();
  await waitConnected(ada);
  await waitMessage(ada, "plain news");
  assert.equal(await ada.locator("#messages .unread-line").count(), 0);

  // Closed meanwhile: what was said counts as unread from the read position.
  await ada.close();
  await bob.say("lobby", "bob-1", "while you were away 1");
  await bob.say("lobby", "bob-1", "while you were away 2");
  const again = await openIn(context, "lobby");
  await unreadLineBefore(again, "while you were away 1");
  await waitMessage(again, "while you were away 2");
  // It is read now (shown, visible, at the bottom).
  await again.waitForFunction(
    (n) => (JSON.parse(localStorage.getItem("wsgate.lastRead")) || {}).lobby === n,
    Math.max(...(await bob.history("lobby")).map((m) => Number(m.seq))),
  );

  // Another room, closed meanwhile, shows its unread count from the read position.
  await again.getByLabel("Join a room").fill("side");
  await again.getByLabel("Join a room").press("Enter");
  await again.waitForFunction(() => location.hash === "#side");
  await bob.say("side", "bob-1", "side 1");
  await waitMessage(again, "side 1");
  await again.locator('#room-list a[href="#lobby"]').click();
  await again.waitForFunction(() => location.hash === "#lobby");
  await again.close();
  await bob.say("side", "bob-1", "side 2");
  await bob.say("side", "bob-1", "side 3");
  const third = await openIn(context, "lobby");
  await third.locator('#room-list a[href="#side"] .badge').filter({ hasText: "2" }).waitFor();
  await third.waitForFunction(() => document.title === "(2) wsgate chat");
  await third.locator('#room-list a[href="#side"]').click();
  await unreadLineBefore(third, "side 2");

  bob.close();
  assert.deepEqual([...(again.errors || []), ...(third.errors || [])], []);
  await context.close();
});

test("each room keeps its draft across switches and a reload; Enter sends the shown room's draft to it", async () => {
  const context = await attentiveContext("Dee");
  const page = await openIn(context, "one");
  const box = page.getByLabel("Message", { exact: true });
  await page.getByLabel("Join a room").fill("two");
  await page.getByLabel("Join a room").press("Enter");
  await page.waitForFunction(() => location.hash === "#two");
  await box.fill("draft for two");
  await page.locator('#room-list a[href="#one"]').click();
  await page.waitForFunction(() => location.hash === "#one");
  assert.equal(await box.inputValue(), "");
  await box.fill("draft for one");
  await page.reload();
  await waitConnected(page);
  assert.equal(await box.inputValue(), "draft for one");
  await page.locator('#room-list a[href="#two"]').click();
  await page.waitForFunction(() => location.hash === "#two");
  assert.equal(await box.inputValue(), "draft for two");
  await box.press("Enter");
  await waitMessage(page, "draft for two");
  assert.equal(await box.inputValue(), "");

  const watcher = await Client.open(fx.gate.url);
  const inTwo = (await watcher.history("two")).map((m) => m.content);
  const inOne = (await watcher.history("one")).map((m) => m.content);
  assert.deepEqual(inTwo, ["draft for two"]);
  assert.deepEqual(inOne, []);
  // The sent draft is gone; the other room's is kept.
  await page.reload();
  await waitConnected(page);
  assert.equal(await box.inputValue(), "");
  await page.locator('#room-list a[href="#one"]').click();
  assert.equal(await box.inputValue(), "draft for one");
  watcher.close();
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

test("@ offers the room's people by keyboard; the completed name with a space is a highlighted mention", async () => {
  const context = await attentiveContext("Eve");
  const page = await openIn(context, "mentions");
  const other = await Client.open(fx.gate.url);
  await other.setName("grace-1", "Grace Hopper");
  await other.setName("greg-1", "Greg");
  await other.say("mentions", "grace-1", "hello all");
  await other.say("mentions", "greg-1", "hi");
  await waitMessage(page, "hi");
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#messages .who")].some((e) => e.textContent === "Grace Hopper"),
  );

  const box = page.getByLabel("Message", { exact: true });
  await box.focus();
  await page.keyboard.type("thanks @gr");
  const list = page.getByRole("listbox", { name: "People to mention" });
  await list.waitFor();
  assert.deepEqual(await list.getByRole("option").allTextContents(), ["Grace Hopper grace-1", "Greg greg-1"]);
  assert.equal(await box.getAttribute("aria-activedescendant"), "mention-opt-0");
  await page.keyboard.press("ArrowDown");
  assert.equal(await list.locator('[aria-selected="true"]').textContent(), "Greg greg-1");
  await page.keyboard.press("ArrowUp");
  await page.keyboard.press("Enter"); // completes, does not send
  assert.equal(await box.inputValue(), "thanks @Grace Hopper ");
  assert.equal(await list.isHidden(), true);

  // Escape closes the list; Enter then sends.
  await page.keyboard.type("and @g");
  await list.waitFor();
  await page.keyboard.press("Escape");
  assert.equal(await list.isHidden(), true);
  await page.keyboard.press("Enter");
  await waitMessage(page, "thanks @Grace Hopper and @g");
  const mine = page.locator("#messages li.msg.mine").last();
  assert.deepEqual(await mine.locator(".mention").allTextContents(), ["@Grace Hopper"]);
  assert.equal(await mine.locator(".mention.me").count(), 0);

  // Grace names Eve: that mention is marked as Eve's own.
  await other.say("mentions", "grace-1", "@Eve welcome");
  await waitMessage(page, "@Eve welcome");
  assert.equal(await page.locator("#messages li.msg.mentions-me .mention.me").textContent(), "@Eve");
  other.close();
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

test("more than a history page while away: all of it counts as unread, and the line moves up to the first one missed", async () => {
  const context = await attentiveContext("Fay");
  const page = await openIn(context, "calm");
  const fay = await page.evaluate(() => JSON.parse(localStorage.getItem("wsgate.userId")));
  await page.getByLabel("Join a room").fill("busy");
  await page.getByLabel("Join a room").press("Enter");
  await page.waitForFunction(() => location.hash === "#busy");
  const bob = await Client.open(fx.gate.url);
  await bob.say("busy", "bob-2", "read before leaving");
  await waitMessage(page, "read before leaving");
  const readTo = Number((await bob.history("busy")).at(-1).seq);
  await page.waitForFunction((n) => (JSON.parse(localStorage.getItem("wsgate.lastRead")) || {}).busy === n, readTo);
  await page.locator('#room-list a[href="#calm"]').click();
  await page.waitForFunction(() => location.hash === "#calm");
  await page.close();

  // 120 of Bob's, then 3 of Fay's own (sent from elsewhere): 2.5 history pages.
  for (let i = 1; i <= 120; i++) await bob.say("busy", "bob-2", `missed ${i}`);
  for (let i = 1; i <= 3; i++) await bob.say("busy", fay, `mine ${i}`);

  const again = await openIn(context, "calm");
  const badge = again.locator('#room-list a[href="#busy"] .badge');
  await badge.filter({ hasText: "99+" }).waitFor();
  assert.equal(await badge.getAttribute("aria-label"), "120 unread");
  await again.waitForFunction(() => document.title === "(120) wsgate chat");

  // Shown: the line stands above the oldest message held, then above
  // "missed 1" once the older pages are loaded (scrolling up).
  await again.locator('#room-list a[href="#busy"]').click();
  await again.waitForFunction(() => location.hash === "#busy");
  await waitMessage(again, "mine 3");
  await again.waitForFunction(
    () => {
      const s = document.getElementById("scroller");
      s.scrollTop = 0;
      return [...document.querySelectorAll("#messages li.msg .text")].some((e) => e.textContent === "missed 1");
    },
    null,
    { timeout: 15000 },
  );
  await unreadLineBefore(again, "missed 1");
  assert.equal(await again.locator("#messages .unread-line").count(), 1);
  bob.close();
  assert.deepEqual(again.errors || [], []);
  await context.close();
});

// Two people chat both ways in real time; an XSS payload stays text.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, openChat, sendText, useGateAndBrowser, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

test("two pages chat both ways in real time", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "lobby" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "lobby" });

  await sendText(ada, "hello from Ada");
  await waitMessage(bob, "hello from Ada");
  await sendText(bob, "hi Ada, Bob here");
  await waitMessage(ada, "hi Ada, Bob here");

  // Names are looked up and shown; each side marks its own message.
  await ada.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg .who")].some((e) => e.textContent === "Bob"),
  );
  const mine = await ada.locator("#messages li.msg.mine .text").allTextContents();
  assert.deepEqual(mine, ["hello from Ada"]);
  assert.equal(await ada.locator("#messages li.msg.pending").count(), 0);
  // The room is in the URL.
  assert.equal(new URL(ada.url()).hash, "#lobby");

  // A second room: messages there count as unread for Ada until she opens it.
  await ada.getByLabel("Join a room").fill("random");
  await ada.getByLabel("Join a room").press("Enter");
  await ada.waitForFunction(() => location.hash === "#random");
  await ada.locator('#room-list a[href="#lobby"]').click();
  await bob.goto(`${fx.gate.url}/#random`);
  await bob.locator('#status[data-state="connected"]').waitFor();
  await sendText(bob, "over in random");
  await ada.locator('#room-list a[href="#random"] .badge').filter({ hasText: "1" }).waitFor();
  await ada.locator('#room-list a[href="#random"]').click();
  await waitMessage(ada, "over in random");
  assert.equal(await ada.locator('#room-list a[href="#random"] .badge').count(), 0);

  // Leaving a room removes it from the list and opens another one.
  await ada.getByRole("button", { name: "Leave room" }).click();
  await ada.waitForFunction(() => location.hash === "#lobby");
  assert.deepEqual(await ada.locator("#room-list a").allTextContents(), ["lobby"]);
  assert.deepEqual(await ada.evaluate(() => JSON.parse(localStorage.getItem("wsgate.rooms"))), ["lobby"]);

  // Renaming: own messages show the new name; others see it after a reload.
  await ada.getByLabel("Your display name").fill("Ada L.");
  await ada.getByLabel("Your display name").press("Enter");
  await ada.locator("#name-note", { hasText: "Saved" }).waitFor();
  await ada.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg.mine .who")].every((e) => e.textContent === "Ada L."),
  );
  await bob.goto(`${fx.gate.url}/#lobby`);
  await bob.reload();
  await bob.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg .who")].some((e) => e.textContent === "Ada L."),
  );

  assert.deepEqual(ada.errors || [], []);
  assert.deepEqual(bob.errors || [], []);
  await ada.context().close();
  await bob.context().close();
});

test("a user seen before they stored their name shows by name once they do", async () => {
  // Cleo's page looks Dan up while Dan has joined but not yet named himself:
  // his name and his join travel apart, so a page can see either first.
  const cleo = await openChat(fx.browser, fx.gate, { name: "Cleo", room: "names" });
  const dan = await Client.open(fx.gate.url);
  await dan.say("names", "dan-7f3a", "hello, no name yet");
  await waitMessage(cleo, "hello, no name yet");
  // Her page has looked him up (and remembered that he has no name).
  await cleo.waitForFunction(
    () => JSON.parse(localStorage.getItem("wsgate.names") || "{}")["dan-7f3a"] === "dan-7f3a",
  );
  await dan.setName("dan-7f3a", "Dan");
  // Asked again within seconds, not after the names go stale (2 minutes).
  await cleo.waitForFunction(
    () => [...document.querySelectorAll("#messages li.msg .who")].some((e) => e.textContent === "Dan"),
    null,
    { timeout: 10000 },
  );
  dan.close();
  assert.deepEqual(cleo.errors || [], []);
  await cleo.context().close();
});

test("keyboard only: skip link, Enter sends, Shift+Enter makes a new line; controls are labelled", async () => {
  const kim = await openChat(fx.browser, fx.gate, { name: "Kim", room: "keys" });
  await kim.keyboard.press("Tab");
  assert.equal(await kim.evaluate(() => document.activeElement.className), "skip");
  await kim.keyboard.press("Enter");
  assert.equal(await kim.evaluate(() => document.activeElement.id), "content");
  assert.equal(new URL(kim.url()).hash, "#keys");
  await kim.keyboard.type("first line");
  await kim.keyboard.press("Shift+Enter");
  await kim.keyboard.type("second line");
  await kim.keyboard.press("Enter");
  await waitMessage(kim, "first line\nsecond line");
  assert.equal(await kim.locator("#content").inputValue(), "");

  // Every form control has an accessible name; new messages reach a live region.
  const unnamed = await kim.evaluate(() =>
    [...document.querySelectorAll("input, textarea, button")]
      .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.textContent.trim()))
      .map((el) => el.outerHTML),
  );
  assert.deepEqual(unnamed, []);
  assert.equal(await kim.locator("#announcer").getAttribute("aria-live"), "polite");
  await kim.context().close();
});

test("an XSS payload is shown as literal text and runs nothing", async () => {
  const payload = "<img src=x onerror=alert(1)> <script>alert(2)</script> see https://example.com/path?x=1.";
  const eve = await openChat(fx.browser, fx.gate, { name: "<b>Eve</b>", room: "xss" });
  const vic = await openChat(fx.browser, fx.gate, { name: "Victim", room: "xss" });
  let dialogs = 0;
  for (const p of [eve, vic]) p.on("dialog", (d) => (dialogs++, d.dismiss()));
  await vic.evaluate(() => {
    window.__pwned = false;
    window.alert = () => (window.__pwned = true);
  });

  await sendText(eve, payload);
  await waitMessage(vic, payload);
  await vic.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg .who")].some((e) => e.textContent === "<b>Eve</b>"),
  );
  assert.equal(await vic.locator("#messages img").count(), 0);
  assert.equal(await vic.locator("#messages script").count(), 0);
  assert.equal(await vic.locator("#messages b").count(), 0);
  // The link is an anchor made with DOM APIs, http(s) only, safe rel/target.
  const link = vic.locator("#messages a").first();
  assert.equal(await link.getAttribute("href"), "https://example.com/path?x=1");
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  assert.equal(await link.getAttribute("target"), "_blank");
  assert.equal(await vic.evaluate(() => window.__pwned), false);
  assert.equal(dialogs, 0);
  await eve.context().close();
  await vic.context().close();
});

// Main states of the client, light and dark, desktop and 375 px wide, saved to
// e2e/screenshots/ for a look; checks the failed-send state on the way.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { before, test } from "node:test";
import { Client, SCREENSHOTS, openChat, sendText, useGateAndBrowser, waitConnected, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();
before(() => mkdirSync(SCREENSHOTS, { recursive: true }));

const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });

async function seed() {
  const c = await Client.open(fx.gate.url);
  await c.setName("grace", "Grace Hopper");
  await c.setName("linus", "Linus");
  await c.say("design", "grace", "Morning! Did anyone look at the new gateway metrics?");
  await c.say("design", "grace", "The p99 is down to 4 ms since the batching change.");
  await c.say("design", "linus", "Nice. Dashboard is at https://example.com/dashboards/gateway?range=24h.");
  await c.say("design", "linus", "I also wrote up the reconnect behaviour:\n- backoff with jitter\n- catch-up by seq\n- outbox resend with the same id");
  await c.say("random", "linus", "lunch?");
  await c.say("random", "grace", "yes, 12:30");
  return c;
}

test("screenshots of the main states", async () => {
  const c = await seed();
  for (const scheme of ["light", "dark"]) {
    const page = await openChat(fx.browser, fx.gate, { name: "Ada Lovelace", room: "design", colorScheme: scheme });
    await page.getByLabel("Join a room").fill("random");
    await page.getByLabel("Join a room").press("Enter");
    await page.locator('#room-list a[href="#design"]').click();
    await sendText(page, `Looks great from here (${scheme})`);
    await waitMessage(page, `Looks great from here (${scheme})`);
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#messages .who")].some((e) => e.textContent === "Grace Hopper"),
    );
    await c.say("random", "grace", `unread in random (${scheme})`);
    await page.locator('#room-list a[href="#random"] .badge').waitFor();

    await shot(page, `desktop-${scheme}`);

    // A message over the byte limit is refused in place, the text kept.
    await sendText(page, "x".repeat(5000));
    await page.locator("#composer-count.over", { hasText: "Too long" }).waitFor();
    await shot(page, `desktop-too-long-${scheme}`);
    await page.getByLabel("Message", { exact: true }).fill("");

    // A send the server refused for good (kept in the outbox across a reload) shows its error by the message.
    await page.evaluate(() => {
      const sender = JSON.parse(localStorage.getItem("wsgate.userId"));
      const item = { id: "refused-1", room_id: "design", sender, content: "a message the server refused",
        created: Date.now(), state: "failed", error: "content is not allowed here" };
      localStorage.setItem("wsgate.outbox", JSON.stringify([item]));
    });
    await page.reload();
    await waitConnected(page);
    const failed = page.locator("#messages li.msg.failed");
    await failed.waitFor();
    assert.match(await failed.locator(".send-error").textContent(), /Not sent: .+/);
    await shot(page, `desktop-failed-${scheme}`);
    await failed.getByRole("button", { name: "Discard" }).click();
    await failed.waitFor({ state: "detached" });

    // Mobile: the room list collapses into a drawer.
    await page.setViewportSize({ width: 375, height: 740 });
    await page.locator("#toggle-rooms").waitFor();
    assert.equal(await page.locator("#sidebar").isVisible(), false);
    await shot(page, `mobile-${scheme}`);
    await page.locator("#toggle-rooms").click();
    await page.locator("#sidebar").waitFor({ state: "visible" });
    await page.waitForFunction(() => getComputedStyle(document.getElementById("sidebar")).transform === "none");
    await shot(page, `mobile-drawer-${scheme}`);
    await page.keyboard.press("Escape");
    await page.locator("#sidebar").waitFor({ state: "hidden" });
    await page.context().close();
  }

  // Disconnected, with a pending message.
  const page = await openChat(fx.browser, fx.gate, { name: "Ada Lovelace", room: "design" });
  await fx.gate.kill();
  await page.locator('#status[data-state="reconnecting"]').waitFor();
  await sendText(page, "this waits in the outbox");
  await page.locator("#messages li.msg.pending").waitFor();
  await shot(page, "desktop-reconnecting");
  await page.setViewportSize({ width: 375, height: 740 });
  await page.emulateMedia({ colorScheme: "dark" });
  await shot(page, "mobile-reconnecting-dark");
  await fx.gate.restart();
  await waitMessage(page, "this waits in the outbox", 20000);
  c.close();
});

test("screenshots of the chat basics: editing, edited and deleted messages, the directory, a first visit", async () => {
  const c = await Client.open(fx.gate.url);
  await c.setName("grace", "Grace Hopper");
  await c.say("basics", "grace", "Anyone up for a review at 3?");
  for (const scheme of ["light", "dark"]) {
    const page = await openChat(fx.browser, fx.gate, { name: "Ada Lovelace", room: "basics", colorScheme: scheme });
    const mine = (t) => page.locator("#messages li.msg:not(.pending)", { hasText: t });
    await sendText(page, `Yes, at 3 works (${scheme})`);
    await sendText(page, `Actually, wait (${scheme})`);
    await waitMessage(page, `Actually, wait (${scheme})`);
    await mine(`Yes, at 3 works (${scheme})`).getByRole("button", { name: "Edit message" }).click();
    await page.getByRole("textbox", { name: "Edit message" }).fill(`Yes, at 3:30 works (${scheme})`);
    await shot(page, `edit-open-${scheme}`);
    await page.getByRole("textbox", { name: "Edit message" }).press("Enter");
    await waitMessage(page, `Yes, at 3:30 works (${scheme})`);
    await mine(`Actually, wait (${scheme})`).getByRole("button", { name: "Delete message" }).click();
    await shot(page, `delete-confirm-${scheme}`);
    await page.getByRole("group", { name: "Delete this message?" }).getByRole("button", { name: "Delete" }).click();
    await page.locator("#messages li.msg.deleted").last().waitFor();
    await mine(`Yes, at 3:30 works (${scheme})`).hover();
    await shot(page, `edited-deleted-${scheme}`);
    await page.getByRole("button", { name: "Browse rooms" }).click();
    await page.getByRole("dialog", { name: "Browse rooms" }).getByRole("button", { name: /# basics/ }).waitFor();
    await shot(page, `directory-${scheme}`);
    await page.context().close();
  }
  const context = await fx.browser.newContext({ viewport: { width: 1100, height: 720 } });
  const first = await context.newPage();
  await first.goto(`${fx.gate.url}/#basics`);
  await waitConnected(first);
  await shot(first, "first-visit");
  await context.close();
  c.close();
});

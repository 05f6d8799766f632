// History on join, and older pages when scrolling up without the view jumping.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, openChat, sendText, useGateAndBrowser, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

const TOTAL = 130;

test("history appears on join and older pages load on scroll up", async () => {
  const seeder = await Client.open(fx.gate.url);
  await seeder.setName("seeder", "Seeder");
  for (let i = 1; i <= TOTAL; i++) await seeder.say("big", "seeder", `seed message ${i}`);

  const page = await openChat(fx.browser, fx.gate, { name: "Reader", room: "big" });
  // The last page is shown, scrolled to the bottom.
  await waitMessage(page, `seed message ${TOTAL}`);
  const shown = () => page.locator("#messages li.msg").count();
  assert.equal(await shown(), 50);
  assert.equal(await page.locator("#messages li.msg .text").first().textContent(), `seed message ${TOTAL - 49}`);
  await page.waitForFunction(() => {
    const s = document.getElementById("scroller");
    return s.scrollHeight - s.scrollTop - s.clientHeight < 5;
  });
  // Consecutive messages of one sender are grouped under one name.
  assert.equal(await page.locator("#messages li.msg:not(.grouped)").count(), 1);

  // Scroll to the top: the next older page is prepended and the message that
  // was at the top stays where it was.
  const anchor = page.locator(`#messages li.msg[data-seq="${TOTAL - 45}"]`);
  const yAtTop = await page.evaluate((seq) => {
    const s = document.getElementById("scroller");
    const el = document.querySelector(`#messages li.msg[data-seq="${seq}"]`);
    return el.getBoundingClientRect().top - s.getBoundingClientRect().top + s.scrollTop;
  }, TOTAL - 45);
  await page.evaluate(() => (document.getElementById("scroller").scrollTop = 0));
  await waitMessage(page, `seed message ${TOTAL - 50}`);
  const box = await anchor.boundingBox();
  const scroller = await page.locator("#scroller").boundingBox();
  assert.ok(Math.abs(box.y - scroller.y - yAtTop) < 4, `anchor moved from ${yAtTop} to ${box.y - scroller.y}px`);

  // Keep scrolling up until the beginning.
  for (let i = 0; i < 5; i++) {
    const n = await shown();
    if (n === TOTAL) break;
    await page.evaluate(() => (document.getElementById("scroller").scrollTop = 0));
    await page.waitForFunction((k) => document.querySelectorAll("#messages li.msg").length > k, n);
  }
  await page.waitForFunction((n) => document.querySelectorAll("#messages li.msg").length === n, TOTAL);
  await page.locator("#history-note", { hasText: "beginning" }).waitFor();
  const seqs = await page.locator("#messages li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: TOTAL }, (_, i) => i + 1));

  // Scrolled up, a new message does not yank the view down; a button offers to jump.
  const before = await page.evaluate(() => document.getElementById("scroller").scrollTop);
  await seeder.say("big", "seeder", "new while reading");
  await page.locator("#jump").waitFor();
  assert.equal(await page.evaluate(() => document.getElementById("scroller").scrollTop), before);
  await page.locator("#jump").click();
  await sendText(page, "caught up");
  await waitMessage(page, "caught up");
  seeder.close();
  assert.deepEqual(page.errors || [], []);
});

// Two tabs of one browser (two pages of one context) share the room list,
// the outbox and read positions; a message is sent by one tab, once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, sendText, useGateAndBrowser, waitConnected, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

/** Opens a tab and counts the chat_message frames it sends, by content. */
async function tab(context, room, sent) {
  const page = await context.newPage();
  page.on("pageerror", (e) => (page.errors ||= []).push(e));
  page.on("websocket", (ws) =>
    ws.on("framesent", ({ payload }) => {
      let f;
      try {
        f = JSON.parse(String(payload));
      } catch {
        return;
      }
      if (f.chat_message) sent.set(f.chat_message.content, (sent.get(f.chat_message.content) || 0) + 1);
    }),
  );
  await page.goto(`${fx.gate.url}/#${room}`);
  await waitConnected(page);
  return page;
}

test("two tabs share rooms, the outbox and read positions; each message is sent once", async () => {
  const context = await fx.browser.newContext({ viewport: { width: 1100, height: 720 } });
  await context.addInitScript(() => {
    if (!localStorage.getItem("wsgate.userName")) localStorage.setItem("wsgate.userName", JSON.stringify("Tab"));
  });
  const sent = new Map();
  const first = await tab(context, "shared", sent);
  const second = await tab(context, "shared", sent);

  // Typed in either tab: shown in both, sent by one of them, once.
  await sendText(second, "from the second tab");
  await waitMessage(first, "from the second tab");
  await waitMessage(second, "from the second tab");
  await sendText(first, "from the first tab");
  await waitMessage(second, "from the first tab");
  await waitMessage(first, "from the first tab");
  const watcher = await Client.open(fx.gate.url);
  assert.deepEqual(
    (await watcher.history("shared")).map((m) => m.content),
    ["from the second tab", "from the first tab"],
  );
  assert.equal(sent.get("from the second tab"), 1);
  assert.equal(sent.get("from the first tab"), 1);
  for (const p of [first, second]) {
    assert.deepEqual(await p.evaluate(() => JSON.parse(localStorage.getItem("wsgate.outbox"))), []);
    // Shown once each, confirmed: no pending copy is left in either tab.
    await p.waitForFunction(() => document.querySelectorAll("#messages li.msg.pending").length === 0);
    assert.deepEqual(await p.locator("#messages li.msg .text").allTextContents(), [
      "from the second tab",
      "from the first tab",
    ]);
  }

  // A room joined in one tab is in the other's list; neither overwrites the other's.
  await first.getByLabel("Join a room").fill("alpha");
  await first.getByLabel("Join a room").press("Enter");
  await second.locator('#room-list a[href="#alpha"]').waitFor();
  await second.getByLabel("Join a room").fill("beta");
  await second.getByLabel("Join a room").press("Enter");
  await first.locator('#room-list a[href="#beta"]').waitFor();
  for (const p of [first, second]) {
    assert.deepEqual((await p.locator("#room-list a").allTextContents()).sort(), ["alpha", "beta", "shared"]);
  }
  assert.deepEqual(
    (await first.evaluate(() => JSON.parse(localStorage.getItem("wsgate.rooms")))).sort(),
    ["alpha", "beta", "shared"],
  );

  // Read in one tab is read in both: written once more by the other, it stays.
  await watcher.say("alpha", "someone", "news in alpha");
  await waitMessage(first, "news in alpha");
  const seq = Math.max(...(await watcher.history("alpha")).map((m) => Number(m.seq)));
  await first.waitForFunction((n) => (JSON.parse(localStorage.getItem("wsgate.lastRead")) || {}).alpha === n, seq);
  await watcher.say("beta", "someone", "news in beta");
  await waitMessage(second, "news in beta");
  await second.waitForFunction(() => (JSON.parse(localStorage.getItem("wsgate.lastRead")) || {}).beta > 0);
  const read = await second.evaluate(() => JSON.parse(localStorage.getItem("wsgate.lastRead")));
  assert.equal(read.alpha, seq);

  // The sending tab closes: the other takes over, still once per message.
  await first.close();
  await second.locator('#room-list a[href="#shared"]').click();
  await sendText(second, "after the first tab closed");
  await waitMessage(second, "after the first tab closed");
  assert.equal(sent.get("after the first tab closed"), 1);

  watcher.close();
  assert.deepEqual([...(first.errors || []), ...(second.errors || [])], []);
  await context.close();
});

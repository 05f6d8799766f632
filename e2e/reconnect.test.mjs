// The server dies (SIGKILL) with a message waiting in a page's outbox; it comes
// back on the same port and database; the message is delivered exactly once,
// with the id it was given when typed, and nothing said meanwhile is missed.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { Client, SplitGate, openChat, sendText, useGateAndBrowser, waitConnected, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

test("a message typed while the server is down is delivered once after it restarts", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "resil" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "resil" });
  await sendText(ada, "before the crash");
  await waitMessage(bob, "before the crash");

  await fx.gate.kill("SIGKILL");
  await ada.locator('#status:is([data-state="reconnecting"], [data-state="offline"])').waitFor();
  await bob.locator('#status:is([data-state="reconnecting"], [data-state="offline"])').waitFor();

  const typed = "typed while the server was down";
  await sendText(ada, typed);
  const pending = ada.locator("#messages li.msg.pending", { hasText: typed });
  await pending.waitFor();
  const saved = await ada.evaluate(() => JSON.parse(localStorage.getItem("wsgate.outbox")));
  assert.equal(saved.length, 1);
  assert.equal(saved[0].content, typed);

  await fx.gate.restart();
  const meanwhile = "said right after the restart";
  await sendText(bob, meanwhile);

  await waitConnected(ada, 20000);
  await waitMessage(ada, typed, 20000);
  await waitMessage(ada, meanwhile, 20000);
  await waitMessage(bob, typed, 20000);
  assert.equal(await ada.locator("#messages li.msg.pending").count(), 0);
  await ada.waitForFunction(() => JSON.parse(localStorage.getItem("wsgate.outbox")).length === 0);

  // Exactly once in the stored history, with the id given when it was typed.
  const probe = await Client.open(fx.gate.url);
  const history = await probe.history("resil");
  probe.close();
  const copies = history.filter((m) => m.content === typed);
  assert.equal(copies.length, 1, JSON.stringify(history));
  assert.equal(copies[0].id, saved[0].id);
  assert.equal(history.filter((m) => m.content === meanwhile).length, 1);

  // Both pages show every message once, in seq order.
  for (const page of [ada, bob]) {
    const seqs = await page.locator("#messages li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, history.map((m) => Number(m.seq)));
  }
  assert.deepEqual(ada.errors || [], []);
  assert.deepEqual(bob.errors || [], []);
});

/** Lets the test lose incoming chat_message frames (window.__drop) and close the socket. */
function lossy(context) {
  return context.addInitScript(() => {
    window.__drop = false;
    window.__sockets = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
      set onmessage(f) {
        super.onmessage = (ev) => {
          if (window.__drop && String(ev.data).startsWith('{"chat_message"')) return;
          f(ev);
        };
      }
    };
  });
}

test("a message whose confirmation was lost is resent with its id and stored once", async () => {
  const context = await fx.browser.newContext();
  await lossy(context);
  const page = await context.newPage();
  await page.goto(`${fx.gate.url}/#lost`);
  await waitConnected(page);
  await page.evaluate(() => (window.__drop = true));
  await sendText(page, "confirmation lost");
  await page.locator("#messages li.msg.pending").waitFor();
  // Stored (the server has it) but the page never saw the echo.
  const probe = await Client.open(fx.gate.url);
  const deadline = Date.now() + 10000;
  while ((await probe.history("lost")).length === 0) {
    assert.ok(Date.now() < deadline, "message never stored");
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(await page.locator("#messages li.msg.pending").count(), 1);
  await page.evaluate(() => {
    window.__drop = false;
    for (const s of window.__sockets) s.close();
  });
  await waitMessage(page, "confirmation lost");
  await page.waitForFunction(() => JSON.parse(localStorage.getItem("wsgate.outbox")).length === 0);
  assert.equal(await page.locator("#messages li.msg").count(), 1);
  const history = await probe.history("lost");
  probe.close();
  assert.equal(history.length, 1, JSON.stringify(history));
  await context.close();
});

test("a gap in seq and a dropped connection are both caught up, without doubles", async () => {
  const context = await fx.browser.newContext();
  await lossy(context);
  const cat = await context.newPage();
  await cat.goto(`${fx.gate.url}/#catchup`);
  await waitConnected(cat);
  const writer = await Client.open(fx.gate.url);
  await writer.say("catchup", "writer", "m1");
  await waitMessage(cat, "m1");

  // Frames lost: the next one that arrives shows a gap, which is filled in
  // (230 missing messages: more than one page of catch-up).
  await cat.evaluate(() => (window.__drop = true));
  const says = [];
  for (let i = 2; i <= 231; i++) says.push(writer.say("catchup", "writer", `m${i}`));
  await Promise.all(says);
  await cat.evaluate(() => (window.__drop = false));
  await writer.say("catchup", "writer", "m232");
  await waitMessage(cat, "m232");
  await waitMessage(cat, "m2");
  await cat.waitForFunction(() => document.querySelectorAll("#messages li.msg").length === 232);

  // The connection drops while messages are sent: after the reconnect they
  // are fetched with after_seq.
  await cat.evaluate(() => (window.__drop = true));
  for (let i = 233; i <= 240; i++) await writer.say("catchup", "writer", `m${i}`);
  await cat.evaluate(() => {
    window.__drop = false;
    for (const s of window.__sockets) s.close();
  });
  await waitMessage(cat, "m240");
  await waitConnected(cat);
  const seqs = await cat.locator("#messages li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: 240 }, (_, i) => i + 1));
  const texts = await cat.locator("#messages li.msg .text").allTextContents();
  assert.deepEqual(texts, Array.from({ length: 240 }, (_, i) => `m${i + 1}`));
  writer.close();
  await context.close();
});

test("the gateway's upstream dies while the page stays connected: outbox and catch-up", async () => {
  const split = await SplitGate.start();
  try {
    const page = await openChat(fx.browser, split, { name: "Uma", room: "upstream" });
    const writer = await Client.open(split.url);
    await writer.say("upstream", "writer", "before");
    await waitMessage(page, "before");

    await split.killServer();
    // The WebSocket stays open; the gateway reports UNAVAILABLE and the page says so.
    await page.locator('#status[data-state="reconnecting"]').waitFor();
    const typed = "typed while the upstream was gone";
    await sendText(page, typed);
    await page.locator("#messages li.msg.pending", { hasText: typed }).waitFor();

    await split.startServer();
    // Someone else talks right after the restart (retrying until the gateway is back).
    const deadline = Date.now() + 15000;
    for (;;) {
      try {
        await writer.say("upstream", "writer", "while you were away", "away-1");
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await waitMessage(page, typed, 20000);
    await waitMessage(page, "while you were away", 20000);
    await waitConnected(page, 20000);

    const history = await writer.history("upstream");
    writer.close();
    assert.equal(history.filter((m) => m.content === typed).length, 1, JSON.stringify(history));
    const seqs = await page.locator("#messages li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, history.map((m) => Number(m.seq)));
    assert.deepEqual(page.errors || [], []);
    await page.context().close();
  } finally {
    await split.stop();
  }
});

/**
 * A TCP relay to `port` whose connections can be made to go silent both
 * ways without closing, as over a link that died (a laptop asleep, a
 * network changed): the browser is told nothing. New connections pass.
 */
async function silenceableRelay(port) {
  const pairs = new Set();
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const s of [client, upstream]) s.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    accepted: () => accepted,
    silence() {
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

test("a socket gone silent is found out by a ping and replaced; what was said meanwhile arrives", async () => {
  const relay = await silenceableRelay(fx.gate.port);
  const ada = await openChat(fx.browser, { url: relay.url }, { name: "Ada", room: "silent" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "silent" });
  await sendText(bob, "before the silence");
  await waitMessage(ada, "before the silence");
  const sockets = relay.accepted();

  relay.silence();
  await sendText(bob, "said into the silence");
  await waitMessage(bob, "said into the silence");
  assert.equal(await ada.locator("#status").getAttribute("data-state"), "connected", "the page cannot tell by itself");
  // The page is seen again (a laptop woken): it checks its socket at once,
  // gets no answer within 5 s, and opens another.
  await ada.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
  await waitMessage(ada, "said into the silence", 15000);
  await waitConnected(ada);
  assert.ok(relay.accepted() > sockets, "a new connection replaced the silent one");
  await sendText(ada, "back");
  await waitMessage(bob, "back");
  assert.deepEqual(ada.errors || [], []);
  await ada.context().close();
  await bob.context().close();
  relay.close();
});

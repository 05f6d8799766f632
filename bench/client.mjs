// The web client's benchmark: the real binary, headless Chromium, a room with
// 5,000 messages loaded in the page, and the figures of issue 10.
//
// Usage (from the repository root, after `scripts/e2e.sh` installed e2e/'s packages):
//   node bench/client.mjs            # full run, prints a table and one JSON line
//   node bench/client.mjs --smoke    # a few hundred messages: checks the harness works
//   node bench/client.mjs --no-layout  # see below
// env: WSGATE_BIN (default target/debug/wsgate), CHROMIUM_BIN (default /usr/bin/chromium)
//
// What "shown" means: the page's own clock, from the moment the WebSocket frame
// (or the Enter key, or the click) reached the page to the moment the element is
// in the list with style and layout computed (a forced layout in the
// MutationObserver callback that sees it). Paint and the wait for the next
// vsync are left out: they do not depend on the client's code. Long tasks come
// from PerformanceObserver("longtask").
import os from "node:os";
import { Client, Gate, launch } from "../e2e/lib.mjs";

const smoke = process.argv.includes("--smoke");
// --no-layout: stop the clock when the element is in the DOM, without forcing
// style and layout. Each message then costs what the page does for it, with
// one layout per frame as a browser does; the long tasks of a burst show
// what the client costs without the measurement's own layouts.
const noLayout = process.argv.includes("--no-layout");
const N = smoke
  ? { history: 300, live: 5, own: 5, burst: 20, background: 20, switches: 2 }
  : { history: 5000, live: 40, own: 20, burst: 100, background: 100, switches: 5 };
const ROOM = "bench";
const SIDE = "side";
const TIMEOUT_MS = smoke ? 60000 : 600000;

/** Installed in the page before the client runs: clocks on frames, keys, clicks and DOM changes. */
function instrument({ forceLayout }) {
  const b = {
    waits: new Map(), // data-id -> {t0, confirmed, resolve}
    ownText: null, // {text, t0, resolve, shownAt}
    longtasks: [],
    historyAt: 0, // when the last chat_history answer arrived
    listChangedAt: 0, // when the list last changed (layout forced)
    arrivals: new Map(), // message id -> when its frame arrived
    cond: null, // {check, t0, resolve}
    /** Starts waiting for the element of message `id`; `done(id)` is the promise of its latency. */
    expect(id, confirmed) {
      const w = { t0: 0, confirmed };
      w.promise = new Promise((resolve) => (w.resolve = resolve));
      b.waits.set(id, w);
      b.promises.set(id, w.promise);
    },
    // Kept after the wait is over: the frame may beat the call that asks for it.
    promises: new Map(),
    done(id) {
      return b.promises.get(id);
    },
  };
  window.__bench = b;
  new PerformanceObserver((l) => {
    for (const e of l.getEntries()) b.longtasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: "longtask", buffered: true });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      // Registered before the client sets onmessage, so it runs first.
      this.addEventListener("message", (ev) => {
        const t = performance.now();
        const s = typeof ev.data === "string" ? ev.data : "";
        if (s.startsWith('{"chat_history"') || s.includes('"chat_history":')) b.historyAt = t;
        const m = /"id":"([^"]+)"/.exec(s);
        if (m && s.includes('"chat_message"')) {
          b.arrivals.set(m[1], t);
          const w = b.waits.get(m[1]);
          if (w && !w.t0) w.t0 = t;
        }
      });
    }
  };
  addEventListener(
    "keydown",
    (ev) => {
      if (ev.key === "Enter" && b.ownText && !b.ownText.t0) b.ownText.t0 = performance.now();
    },
    true,
  );
  addEventListener(
    "click",
    () => {
      if (b.cond && !b.cond.t0) b.cond.t0 = performance.now();
    },
    true,
  );
  const seen = (el, now) => {
    if (!(el instanceof Element) || !el.isConnected) return;
    // A container of messages (the client may add them in groups): look inside.
    if (!el.classList.contains("msg")) {
      if (el.firstElementChild) for (const m of el.querySelectorAll("li.msg")) seen(m, now);
      return;
    }
    const w = b.waits.get(el.dataset.id);
    if (w && w.t0 && (!w.confirmed || !el.classList.contains("pending"))) {
      b.waits.delete(el.dataset.id);
      w.resolve(now() - w.t0);
    }
    const o = b.ownText;
    if (o && o.t0 && !o.done) {
      const text = el.querySelector(".text");
      if (text && text.textContent === o.text && (!o.confirmed || !el.classList.contains("pending"))) {
        o.done = true;
        o.resolve(now() - o.t0);
      }
    }
  };
  const onChange = (records) => {
    const list = document.getElementById("messages");
    let t = 0;
    // The first call forces style and layout; later ones read the same clock.
    const now = () => {
      if (!t) {
        if (forceLayout) {
          if (list) list.getBoundingClientRect();
          document.body.getBoundingClientRect();
        }
        t = performance.now();
      }
      return t;
    };
    let listChanged = false;
    for (const r of records) {
      if (list && list.contains(r.target)) listChanged = true;
      if (r.type === "attributes") seen(r.target, now);
      else for (const n of r.addedNodes) seen(n, now);
    }
    if (listChanged) b.listChangedAt = now();
    if (b.cond && b.cond.t0 && b.cond.check()) {
      const c = b.cond;
      b.cond = null;
      c.resolve(now() - c.t0);
    }
  };
  new MutationObserver(onChange).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["class", "id"],
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};
const ms = (x) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : "n/a");

async function seed(gate) {
  const c = await Client.open(gate.url);
  await c.setName("alice-id", "alice");
  const BATCH = 200;
  for (let i = 0; i < N.history; i += BATCH) {
    const calls = [];
    for (let j = i; j < Math.min(N.history, i + BATCH); j++) {
      // Every third message from another sender, so the list groups and ungroups.
      const who = j % 3 === 0 ? "bob-id" : "alice-id";
      calls.push(c.say(ROOM, who, `history ${j} ${"lorem ipsum ".repeat(1 + (j % 5))}`, `h-${j}`));
    }
    await Promise.all(calls);
  }
  await c.say(SIDE, "alice-id", "side room", "side-0");
  return c;
}

/** Longest long task that started in [from, to] (page clock). */
async function longestTask(page, from, to) {
  return page.evaluate(
    ([a, z]) =>
      new Promise((resolve) =>
        // Long task entries are delivered after the task: wait until the page is idle.
        requestIdleCallback(
          () =>
            resolve(
              window.__bench.longtasks
                .filter((t) => t.start + t.duration >= a && t.start <= z)
                .reduce((m, t) => Math.max(m, t.duration), 0),
            ),
          { timeout: 5000 },
        ),
      ),
    [from, to],
  );
}

async function main() {
  const t = Date.now();
  const gate = await Gate.start();
  const browser = await launch();
  const results = { smoke, history: N.history, forced_layout: !noLayout };
  try {
    const alice = await seed(gate);
    console.error(`seeded ${N.history} messages in ${Date.now() - t} ms`);
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    await context.addInitScript(() => {
      localStorage.setItem("wsgate.userName", JSON.stringify("me"));
      localStorage.setItem("wsgate.rooms", JSON.stringify(["bench", "side"]));
    });
    await context.addInitScript(instrument, { forceLayout: !noLayout });
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e));
    await page.goto(`${gate.url}/#${ROOM}`);
    await page.locator('#status[data-state="connected"]').waitFor({ timeout: 30000 });
    await page.locator("#messages li.msg").first().waitFor({ timeout: 30000 });

    // Load the whole history by scrolling up, timing each older page.
    const pages = [];
    for (;;) {
      const before = await page.evaluate(() => document.querySelectorAll("#messages li.msg").length);
      if (before >= N.history) break;
      await page.evaluate(() => {
        const s = document.getElementById("scroller");
        s.scrollTop = 0;
        s.dispatchEvent(new Event("scroll"));
      });
      await page.waitForFunction(
        (n) => document.querySelectorAll("#messages li.msg").length > n,
        before,
        { timeout: TIMEOUT_MS, polling: 50 },
      );
      // Let the list settle (a fill-up may follow), then read the clocks of this page.
      const cost = await page.evaluate(() => window.__bench.listChangedAt - window.__bench.historyAt);
      pages.push({ shown: before, cost });
    }
    const late = pages.filter((p) => p.shown >= N.history * 0.8).map((p) => p.cost);
    results.older_page_ms = { median: pct(late, 50), max: Math.max(...late), pages: late.length };
    console.error(`older page (${late.length} pages with >= 80% shown): median ${ms(pct(late, 50))}, max ${ms(Math.max(...late))}`);

    await page.evaluate(() => {
      const s = document.getElementById("scroller");
      s.scrollTop = s.scrollHeight;
    });
    await page.locator("#jump").waitFor({ state: "hidden" });

    // An incoming message from someone else, one at a time.
    const live = [];
    for (let i = 0; i < N.live; i++) {
      const id = `live-${i}`;
      await page.evaluate((id) => window.__bench.expect(id, true), id);
      const shown = page.evaluate((id) => window.__bench.done(id), id);
      shown.catch(() => {}); // awaited below; a closed page fails the say first
      await alice.say(ROOM, i % 2 ? "alice-id" : "bob-id", `live message ${i}`, id);
      live.push(await shown);
    }
    results.incoming_ms = { p50: pct(live, 50), p95: pct(live, 95), max: Math.max(...live) };
    console.error(`incoming: p50 ${ms(pct(live, 50))}, p95 ${ms(pct(live, 95))}`);

    // Own message: Enter to shown (pending), and Enter to confirmed.
    const ownShown = [];
    const ownConfirmed = [];
    for (let i = 0; i < N.own; i++) {
      const text = `own message ${i}`;
      await page.fill("#content", text);
      const watch = (confirmed) =>
        page.evaluate(
          ([text, confirmed]) =>
            new Promise((resolve) => {
              window.__bench.ownText = { text, t0: 0, confirmed, resolve };
            }),
          [text, confirmed],
        );
      const shown = watch(false);
      await page.evaluate(() => 0); // the watch is installed
      await page.press("#content", "Enter");
      ownShown.push(await shown);
      // Confirmation: the element that is no longer pending (timed from the same Enter).
      const t0 = await page.evaluate(() => window.__bench.ownText.t0);
      const confirmed = page.evaluate(
        ([text, t0]) =>
          new Promise((resolve) => {
            const el = [...document.querySelectorAll("#messages li.msg:not(.pending) .text")].find(
              (e) => e.textContent === text,
            );
            if (el) return resolve(performance.now() - t0);
            window.__bench.ownText = { text, t0, confirmed: true, resolve };
          }),
        [text, t0],
      );
      ownConfirmed.push(await confirmed);
    }
    results.own_shown_ms = { p50: pct(ownShown, 50), p95: pct(ownShown, 95) };
    results.own_confirmed_ms = { p50: pct(ownConfirmed, 50), p95: pct(ownConfirmed, 95) };
    console.error(`own: shown p95 ${ms(pct(ownShown, 95))}, confirmed p95 ${ms(pct(ownConfirmed, 95))}`);

    // A burst: every message sent at once.
    const burstIds = Array.from({ length: N.burst }, (_, i) => `burst-${i}`);
    await page.evaluate((ids) => ids.forEach((id) => window.__bench.expect(id, true)), burstIds);
    const burstDone = page.evaluate(
      (ids) => Promise.all(ids.map((id) => window.__bench.done(id))).then(() => performance.now()),
      burstIds,
    );
    burstDone.catch(() => {});
    await Promise.all(burstIds.map((id, i) => alice.say(ROOM, "bob-id", `burst ${i}`, id)));
    const burstEnd = await burstDone;
    const burstStart = await page.evaluate(
      (ids) => Math.min(...ids.map((id) => window.__bench.arrivals.get(id))),
      burstIds,
    );
    results.burst = {
      all_shown_ms: burstEnd - burstStart,
      longest_task_ms: await longestTask(page, burstStart, burstEnd),
    };
    console.error(`burst of ${N.burst}: all shown in ${ms(results.burst.all_shown_ms)}, longest task ${ms(results.burst.longest_task_ms)}`);

    // A burst into the room not shown.
    const bgIds = Array.from({ length: N.background }, (_, i) => `bg-${i}`);
    await Promise.all(bgIds.map((id, i) => alice.say(SIDE, "alice-id", `background ${i}`, id)));
    await page.waitForFunction(
      (ids) => ids.every((id) => window.__bench.arrivals.has(id)),
      bgIds,
      { timeout: TIMEOUT_MS },
    );
    await page.waitForFunction(
      (n) => {
        const a = [...document.querySelectorAll("#room-list a.room")].find(
          (a) => a.querySelector(".room-name").textContent === "side",
        );
        const b = a && a.querySelector(".badge");
        return b && (b.textContent === String(n) || b.textContent === "99+");
      },
      N.background,
      { timeout: TIMEOUT_MS },
    );
    const [bgStart, bgEnd] = await page.evaluate((ids) => {
      const ts = ids.map((id) => window.__bench.arrivals.get(id));
      return [Math.min(...ts), performance.now()];
    }, bgIds);
    results.background_longest_task_ms = await longestTask(page, bgStart, bgEnd);
    console.error(`background burst of ${N.background}: longest task ${ms(results.background_longest_task_ms)}`);

    // Switching rooms: click the room in the side list, until its last message is in the list.
    const benchLast = await page.evaluate(() => [...document.querySelectorAll("#messages li.msg")].pop().dataset.id);
    const sideLast = bgIds[bgIds.length - 1];
    const switchTo = async (room, lastId) => {
      const done = page.evaluate(
        ([room, lastId]) =>
          new Promise((resolve) => {
            window.__bench.cond = {
              t0: 0,
              resolve,
              check: () => {
                if (document.getElementById("room-title").textContent !== `# ${room}`) return false;
                const list = document.getElementById("messages");
                const msgs = list && list.querySelectorAll("li.msg");
                return !!msgs && msgs.length > 0 && msgs[msgs.length - 1].dataset.id === lastId;
              },
            };
          }),
        [room, lastId],
      );
      await page.evaluate(() => 0);
      await page.locator("#room-list a.room", { hasText: new RegExp(`^${room}`) }).click();
      return done;
    };
    const toSide = [];
    const toBench = [];
    for (let i = 0; i < N.switches; i++) {
      toSide.push(await switchTo(SIDE, sideLast));
      toBench.push(await switchTo(ROOM, benchLast));
    }
    results.switch_ms = {
      to_small_room_max: Math.max(...toSide),
      to_big_room_max: Math.max(...toBench),
      to_big_room_median: pct(toBench, 50),
    };
    console.error(
      `switch: to the small room max ${ms(Math.max(...toSide))}, to the ${N.history}-message room median ${ms(pct(toBench, 50))}, max ${ms(Math.max(...toBench))}`,
    );
    if (page.errors?.length) throw new Error(`page errors: ${page.errors}`);
    alice.close();
  } finally {
    await browser.close();
    await gate.stop();
  }
  results.machine = `${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.type()} ${os.release()}`;
  results.seconds = Math.round((Date.now() - t) / 1000);
  console.log(JSON.stringify(results));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

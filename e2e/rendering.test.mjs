// Incremental rendering of the message list: each change touches only what
// it changes (a live message adds one element, an older page one fragment, a
// confirmation replaces the pending element where it stands, a rename rewrites
// that user's headers, a room not shown is not touched), and the list keeps
// its order and grouping through all of them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, openChat, sendText, useGateAndBrowser, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();

const TOTAL = 120;
// Runs of four messages per sender: seq 70 and 71 share one, so when the
// older page (..70) lands above the first shown message (71), 71 must become grouped.
const senderOf = (seq) => (Math.floor((seq - 1) / 4) % 2 ? "ben-id" : "ann-id");

/** Records, from now on, every change inside the scroller (compactly). */
function recordChanges(page) {
  return page.evaluate(() => {
    const desc = (n) =>
      n.nodeType === 1 ? `${n.tagName.toLowerCase()}.${[...n.classList].join(".")}#${n.dataset.id || ""}` : "#text";
    window.__changes = [];
    window.__observer?.disconnect();
    window.__record = (records) => {
      for (const r of records) {
        window.__changes.push({
          type: r.type,
          target: desc(r.target),
          added: [...r.addedNodes].map(desc),
          removed: [...r.removedNodes].map(desc),
          prev: r.previousSibling ? desc(r.previousSibling) : null,
        });
      }
    };
    window.__observer = new MutationObserver(window.__record);
    window.__observer.observe(document.getElementById("scroller"), {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
      attributeFilter: ["class", "data-seq"],
    });
  });
}
/** The changes recorded so far (those not yet delivered to the observer included). */
/** Whether a change's target is the room's list or one of its chunks. */
const inList = (target) => target.startsWith("div.messages") || target.startsWith("ol.chunk");

const changes = (page) =>
  page.evaluate(() => {
    window.__record(window.__observer.takeRecords());
    return window.__changes;
  });

/**
 * The shown list, checked: confirmed messages by seq, contiguous, then the
 * pending ones; a message is grouped exactly when the one before it is from
 * the same sender (all were said within minutes, on one day); one day
 * separator, at the top; every header names its sender.
 */
async function checkList(page, names) {
  const items = await page.locator("#messages li.msg, #messages li.day").evaluateAll((els) =>
    els.map((e) => ({
      day: e.classList.contains("day"),
      seq: e.dataset.seq ? Number(e.dataset.seq) : null,
      sender: e.dataset.sender,
      grouped: e.classList.contains("grouped"),
      pending: e.classList.contains("pending"),
      who: e.querySelector(".who")?.textContent ?? null,
      text: e.querySelector(".text")?.textContent ?? e.textContent,
    })),
  );
  assert.ok(items[0].day, "the list opens with its day");
  assert.equal(items.filter((i) => i.day).length, 1, "one day, one separator");
  const msgs = items.filter((i) => !i.day);
  const confirmed = msgs.filter((m) => !m.pending);
  for (let k = 1; k < confirmed.length; k++) {
    assert.equal(confirmed[k].seq, confirmed[k - 1].seq + 1, `seq ${confirmed[k - 1].seq} then ${confirmed[k].seq}`);
  }
  assert.ok(msgs.slice(confirmed.length).every((m) => m.pending), "pending messages come last");
  msgs.forEach((m, k) => {
    const grouped = k > 0 && msgs[k - 1].sender === m.sender;
    assert.equal(m.grouped, grouped, `message ${m.seq ?? m.text}: grouped ${m.grouped}, expected ${grouped}`);
    if (!grouped) assert.equal(m.who, names[m.sender], `header of ${m.seq ?? m.text}`);
  });
  return msgs;
}

test("live messages, an older page, a confirmation and a rename each change only their part, in order", async () => {
  const seeder = await Client.open(fx.gate.url);
  await seeder.setName("ann-id", "Ann");
  await seeder.setName("ben-id", "Ben");
  for (let seq = 1; seq <= TOTAL; seq++) await seeder.say("render", senderOf(seq), `message ${seq}`, `m-${seq}`);

  const page = await openChat(fx.browser, fx.gate, { name: "Reader", room: "render" });
  await waitMessage(page, `message ${TOTAL}`);
  const myId = await page.evaluate(() => JSON.parse(localStorage.getItem("wsgate.userId")));
  const names = { "ann-id": "Ann", "ben-id": "Ben", [myId]: "Reader" };
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg .who")].every((e) => ["Ann", "Ben"].includes(e.textContent)),
  );
  let msgs = await checkList(page, names);
  assert.equal(msgs[0].seq, TOTAL - 49);
  assert.equal(msgs[0].grouped, false);

  // A live message: one element added at the end, nothing else touched.
  await recordChanges(page);
  await seeder.say("render", "ann-id", "live from Ann", "live-1");
  await waitMessage(page, "live from Ann");
  let log = await changes(page);
  const added = log.flatMap((r) => r.added);
  assert.deepEqual(added, ["li.msg#live-1"], JSON.stringify(log));
  assert.ok(log.every((r) => r.removed.length === 0), JSON.stringify(log));
  msgs = await checkList(page, names);
  assert.equal(msgs.at(-1).grouped, false, "Ben's run ended at 120: Ann's message has a header");

  // An older page: one fragment above, and the former first message (71) regrouped under 70.
  await recordChanges(page);
  await page.evaluate(() => (document.getElementById("scroller").scrollTop = 0));
  await waitMessage(page, `message ${TOTAL - 50}`);
  await page.waitForFunction(() => document.querySelectorAll("#messages li.msg").length >= 100);
  log = await changes(page);
  const inserted = log.filter((r) => r.type === "childList" && r.added.length && inList(r.target));
  assert.deepEqual(
    inserted.filter((r) => !r.removed.length).map((r) => r.added),
    [["ol.chunk#"]],
    `the page arrives as one fragment (a chunk of the list): ${JSON.stringify(inserted)}`,
  );
  const touched = log
    .filter((r) => inList(r.target))
    .flatMap((r) => r.removed)
    .sort();
  assert.deepEqual(touched, ["li.day#", "li.msg#m-71"], `only the old day separator and 71 were replaced: ${JSON.stringify(touched)}`);
  msgs = await checkList(page, names);
  assert.equal(msgs.find((m) => m.seq === TOTAL - 49).grouped, true);

  // Back at the bottom, an own message: the pending element is replaced where it stands.
  await page.evaluate(() => {
    const s = document.getElementById("scroller");
    s.scrollTop = s.scrollHeight;
  });
  await recordChanges(page);
  await sendText(page, "mine, pending then confirmed");
  await waitMessage(page, "mine, pending then confirmed");
  log = (await changes(page)).filter((r) => r.type === "childList" && inList(r.target));
  assert.equal(log.length, 2, JSON.stringify(log));
  assert.equal(log[0].added.length, 1);
  assert.match(log[0].added[0], /^li\.msg\.mine\.pending#/);
  const id = log[0].added[0].split("#")[1];
  assert.deepEqual(log[1].removed, [`li.msg.mine.pending#${id}`]);
  assert.deepEqual(log[1].added, [`li.msg.mine#${id}`]);
  assert.equal(log[1].prev, "li.msg#live-1", "in place: after the same message as the pending one");
  msgs = await checkList(page, names);
  assert.equal(msgs.at(-1).text, "mine, pending then confirmed");
  assert.equal(msgs.at(-1).pending, false);

  // A rename, learnt when the page reconnects (names are looked up again on
  // every connection): only Ann's headers change.
  await seeder.setName("ann-id", "Annabel");
  seeder.close();
  await recordChanges(page);
  await fx.gate.restart();
  await page.waitForFunction(
    () => [...document.querySelectorAll("#messages li.msg:not(.grouped) .who")].some((e) => e.textContent === "Annabel"),
    null,
    { timeout: 20000 },
  );
  log = await changes(page);
  const listChanges = log.filter((r) => r.target.startsWith("span.who") || r.target.startsWith("span.avatar") || inList(r.target) || r.target.startsWith("li"));
  assert.ok(
    listChanges.every((r) => r.target.startsWith("span.who") || r.target.startsWith("span.avatar")),
    `only names and avatars changed: ${JSON.stringify(listChanges.filter((r) => !/^span\.(who|avatar)/.test(r.target)))}`,
  );
  const annHeaders = (await checkList(page, { ...names, "ann-id": "Annabel" })).filter(
    (m) => m.sender === "ann-id" && !m.grouped,
  );
  assert.ok(annHeaders.length > 5);
  assert.deepEqual(page.errors || [], []);
});

test("a room not shown is not drawn until it is shown; switching back keeps the place", async () => {
  const seeder = await Client.open(fx.gate.url);
  await seeder.setName("ann-id", "Ann");
  for (let i = 1; i <= 60; i++) await seeder.say("front", "ann-id", `front ${i}`, `f-${i}`);
  const page = await openChat(fx.browser, fx.gate, { name: "Switcher", room: "front" });
  await waitMessage(page, "front 60");
  await page.getByLabel("Join a room").fill("back");
  await page.getByLabel("Join a room").press("Enter");
  await page.locator('#room-list a[href="#back"][aria-current="page"]').waitFor();
  await seeder.say("back", "ann-id", "back 1", "b-1");
  await waitMessage(page, "back 1");
  await page.locator('#room-list a[href="#front"]').click();
  await waitMessage(page, "front 60");
  // Read somewhere in the middle of "front".
  const top = await page.evaluate(() => {
    const s = document.getElementById("scroller");
    s.scrollTop = Math.floor((s.scrollHeight - s.clientHeight) / 2);
    return s.scrollTop;
  });

  await recordChanges(page);
  for (let i = 2; i <= 4; i++) await seeder.say("back", "ann-id", `back ${i}`, `b-${i}`);
  await page.locator('#room-list a[href="#back"] .badge', { hasText: "3" }).waitFor();
  assert.deepEqual(await changes(page), [], "the shown list and the hidden one are untouched");

  await page.locator('#room-list a[href="#back"]').click();
  await waitMessage(page, "back 4");
  const back = await page.locator("#messages li.msg .text").allTextContents();
  assert.deepEqual(back, ["back 1", "back 2", "back 3", "back 4"]);
  assert.equal(await page.locator("#messages li.msg:not(.grouped)").count(), 1, "one sender, one header");

  await page.locator('#room-list a[href="#front"]').click();
  await waitMessage(page, "front 60");
  assert.equal(await page.evaluate(() => document.getElementById("scroller").scrollTop), top);
  assert.equal(await page.locator("#messages li.msg").count(), 50);
  seeder.close();
  assert.deepEqual(page.errors || [], []);
});

test("a rename announced by the server shows on another page at once, in that user's headers only", async () => {
  const seeder = await Client.open(fx.gate.url);
  await seeder.setName("ann-id", "Ann");
  for (let i = 1; i <= 3; i++) await seeder.say("renames", "ann-id", `from ann ${i}`, `r-${i}`);
  const reader = await openChat(fx.browser, fx.gate, { name: "Reader", room: "renames" });
  const writer = await openChat(fx.browser, fx.gate, { name: "Writer", room: "renames" });
  await sendText(writer, "from the writer");
  await waitMessage(reader, "from the writer");
  await reader.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.msg:not(.grouped) .who")].some((e) => e.textContent === "Writer"),
  );
  await recordChanges(reader);
  await writer.getByLabel("Your display name").fill("Writer Renamed");
  await writer.getByLabel("Your display name").press("Enter");
  await writer.locator("#name-note", { hasText: "Saved" }).waitFor();
  const saved = Date.now();
  await reader.waitForFunction(
    () => [...document.querySelectorAll("#messages li.msg:not(.grouped) .who")].some((e) => e.textContent === "Writer Renamed"),
    null,
    { timeout: 1000 },
  );
  assert.ok(Date.now() - saved < 1000);
  const who = await reader.locator("#messages li.msg:not(.grouped) .who").allTextContents();
  assert.deepEqual(who, ["Ann", "Writer Renamed"]);
  const log = await changes(reader);
  assert.ok(
    log.every((r) => /^span\.(who|avatar)/.test(r.target)),
    `only the writer's header changed: ${JSON.stringify(log.filter((r) => !/^span\.(who|avatar)/.test(r.target)))}`,
  );
  seeder.close();
  assert.deepEqual([...(reader.errors || []), ...(writer.errors || [])], []);
});

// Layouts that broke in issue 10: an 85-character room name must not widen
// the page, 15 rooms must scroll above the connection footer, and a link
// keeps its balanced trailing ")". Screenshots in e2e/screenshots/
// (layout-long-room-name*.png, layout-15-rooms.png) are for a look; the long
// name is cut with an ellipsis (side list, header) and the composer's
// placeholder stays on one line, measured.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { before, test } from "node:test";
import { Client, SCREENSHOTS, openChat, useGateAndBrowser, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();
before(() => mkdirSync(SCREENSHOTS, { recursive: true }));

const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });

/** The page fits its window, and the composer's and the header's buttons are inside it. */
async function assertFits(page) {
  const fit = await page.evaluate(() => {
    const inside = (id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return r.width > 0 && r.left >= 0 && r.right <= innerWidth;
    };
    return {
      overflow: document.documentElement.scrollWidth - innerWidth,
      send: inside("send-btn"),
      leave: inside("leave"),
    };
  });
  assert.ok(fit.overflow <= 0, `the page is ${fit.overflow}px wider than the window`);
  assert.ok(fit.send, "Send is inside the window");
  assert.ok(fit.leave, "Leave is inside the window");
}

/**
 * A long room name is cut with an ellipsis in the side list and the header,
 * its full name in their titles and text (screen readers read the text);
 * the composer's placeholder stays on one line.
 */
async function assertLongNameCut(page, room) {
  const g = await page.evaluate(() => {
    const list = document.getElementById("room-list");
    const link = list.querySelector('a.room[aria-current="page"]');
    const label = link.querySelector(".room-name");
    const head = document.getElementById("room-title");
    const box = document.getElementById("content");
    const cut = (el) => ({
      cut: el.scrollWidth > el.clientWidth,
      ellipsis: getComputedStyle(el).textOverflow === "ellipsis",
    });
    return {
      listOverflow: list.scrollWidth - list.clientWidth,
      linkRight: link.getBoundingClientRect().right,
      listRight: list.getBoundingClientRect().right,
      label: { ...cut(label), text: label.textContent, title: link.title },
      head: { ...cut(head), text: head.textContent, title: head.title },
      box: (() => {
        const st = getComputedStyle(box);
        const lines = (box.scrollHeight - parseFloat(st.paddingTop) - parseFloat(st.paddingBottom)) / parseFloat(st.lineHeight);
        return { empty: box.value === "", placeholder: box.placeholder, lines };
      })(),
    };
  });
  assert.ok(g.listOverflow <= 0, `the room list is ${g.listOverflow}px wider than itself`);
  assert.ok(g.linkRight <= g.listRight + 0.5, `the shown room's link ends at ${g.linkRight}, the list at ${g.listRight}`);
  assert.deepEqual(g.label, { cut: true, ellipsis: true, text: room, title: `#${room}` });
  assert.deepEqual(g.head, { cut: true, ellipsis: true, text: `# ${room}`, title: `#${room}` });
  // The empty box's content is its placeholder: one line high, not two.
  assert.equal(g.box.empty, true);
  assert.equal(g.box.placeholder, `Message #${room}`);
  assert.ok(g.box.lines < 1.5, `the placeholder takes ${g.box.lines.toFixed(2)} lines`);
}

test("an 85-character room name does not widen the page", async () => {
  const room = `a-very-long-room-name-${"x".repeat(63)}`;
  assert.equal(room.length, 85);
  const c = await Client.open(fx.gate.url);
  await c.say(room, "someone", "hello in a long-named room");
  for (const viewport of [undefined, { width: 375, height: 740 }]) {
    const page = await openChat(fx.browser, fx.gate, { name: "Wide", room, viewport });
    await waitMessage(page, "hello in a long-named room");
    await assertFits(page);
    await shot(page, viewport ? "layout-long-room-name-phone" : "layout-long-room-name");
    // On a phone the side list is a drawer: open it to see the list.
    if (viewport) {
      await page.getByRole("button", { name: "Rooms" }).click();
      await page.locator("body.drawer-open").waitFor();
      await page.waitForFunction(() => document.getAnimations().every((a) => a.playState !== "running"));
      await shot(page, "layout-long-room-name-phone-drawer");
    }
    await assertLongNameCut(page, room);
    await page.context().close();
  }
  c.close();
});

test("15 rooms scroll above the connection footer", async () => {
  const page = await openChat(fx.browser, fx.gate, { name: "Many", room: "room-1" });
  for (let i = 2; i <= 15; i++) {
    await page.getByLabel("Join a room").fill(`room-${i}`);
    await page.getByLabel("Join a room").press("Enter");
  }
  await page.locator("#room-list a").nth(14).waitFor();
  const box = await page.evaluate(() => {
    const rooms = document.querySelector(".rooms").getBoundingClientRect();
    const footer = document.querySelector(".conn").getBoundingClientRect();
    const list = document.getElementById("room-list");
    return { roomsBottom: rooms.bottom, footerTop: footer.top, scrolls: list.scrollHeight > list.clientHeight };
  });
  assert.ok(box.roomsBottom <= box.footerTop + 1, `the room list ends at ${box.roomsBottom}, the footer starts at ${box.footerTop}`);
  assert.ok(box.scrolls, "the room list scrolls");
  // The last room can be reached and is not under the footer once scrolled to.
  const last = page.locator('#room-list a[href="#room-15"]');
  await last.scrollIntoViewIfNeeded();
  const lastBox = await last.boundingBox();
  assert.ok(lastBox.y + lastBox.height <= box.footerTop + 1);
  await shot(page, "layout-15-rooms");
  await page.context().close();
});

test("a link keeps a balanced trailing parenthesis, not a closing one of the prose", async () => {
  const wiki = "https://en.wikipedia.org/wiki/Rust_(programming_language)";
  const c = await Client.open(fx.gate.url);
  await c.say("links", "someone", `read ${wiki} (or https://example.com/a).`);
  const page = await openChat(fx.browser, fx.gate, { name: "Reader", room: "links" });
  await waitMessage(page, `read ${wiki} (or https://example.com/a).`);
  const hrefs = await page.locator("#messages a").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
  assert.deepEqual(hrefs, [wiki, "https://example.com/a"]);
  c.close();
  await page.context().close();
});

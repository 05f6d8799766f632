// Presence (who is online in the room) and typing indicators between two pages.
import assert from "node:assert/strict";
import path from "node:path";
import { mkdirSync } from "node:fs";
import { before, test } from "node:test";
import { SCREENSHOTS, openChat, useGateAndBrowser, waitMessage } from "./lib.mjs";

const fx = useGateAndBrowser();
before(() => mkdirSync(SCREENSHOTS, { recursive: true }));

/** Waits until the page's online list holds exactly these names (any order). */
function waitOnline(page, names, timeout = 15000) {
  return page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll("#presence-list .presence-name")].map((e) => e.textContent).sort();
      const count = document.getElementById("presence-count").textContent;
      return (
        !document.getElementById("presence").hidden &&
        JSON.stringify(got) === JSON.stringify([...want].sort()) &&
        count === `${want.length} online`
      );
    },
    names,
    { timeout },
  );
}

const typingText = (page) => page.locator("#typing").textContent();

test("presence lists who is online; typing shows and clears", async () => {
  const ada = await openChat(fx.browser, fx.gate, { name: "Ada", room: "lobby" });
  const bob = await openChat(fx.browser, fx.gate, { name: "Bob", room: "lobby" });

  // Both pages list both names as online.
  await waitOnline(ada, ["Ada", "Bob"]);
  await waitOnline(bob, ["Ada", "Bob"]);
  assert.equal(await ada.locator("#typing").getAttribute("aria-live"), "polite");
  assert.equal(await typingText(ada), "");

  // The list opens as a popover from the header.
  await ada.locator("#presence summary").click();
  await ada.locator("#presence-list").waitFor({ state: "visible" });

  // Bob types: Ada sees it; Bob does not see his own typing.
  await bob.getByLabel("Message", { exact: true }).pressSequentially("hel");
  await ada.locator("#typing", { hasText: "Bob is typing…" }).waitFor({ timeout: 5000 });
  assert.equal(await typingText(bob), "");

  await ada.screenshot({ path: path.join(SCREENSHOTS, "presence-typing-desktop.png") });

  // Without more typing the line expires by itself, about 5 s after the last frame.
  const shownAt = Date.now();
  await ada.waitForFunction(() => document.getElementById("typing").textContent === "", null, { timeout: 9000 });
  assert.ok(Date.now() - shownAt > 3000, "the typing line stays for a few seconds");

  // Bob types again (the 3 s throttle has passed), then sends: the line clears at once.
  await bob.getByLabel("Message", { exact: true }).pressSequentially("lo");
  await ada.locator("#typing", { hasText: "Bob is typing…" }).waitFor({ timeout: 5000 });
  await bob.getByLabel("Message", { exact: true }).press("Enter");
  await waitMessage(ada, "hello");
  await ada.waitForFunction(() => document.getElementById("typing").textContent === "", null, { timeout: 1500 });

  // Bob leaves: Ada no longer lists him.
  await bob.context().close();
  await waitOnline(ada, ["Ada"]);

  // Narrow screen: the header still fits the online count.
  await ada.setViewportSize({ width: 375, height: 700 });
  await ada.screenshot({ path: path.join(SCREENSHOTS, "presence-narrow.png") });

  assert.deepEqual(ada.errors || [], []);
  await ada.context().close();
});

// Accessibility: axe-core (WCAG 2.1 A and AA rules) finds nothing in the
// light, dark and phone layouts of a room with messages, grouped messages,
// people online, the "New messages" line, mentions (the user's own among
// them) and the @mention completion list open on a message being typed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { Client, SplitGate, openChat, sendText, useGateAndBrowser, waitMessage } from "./lib.mjs";

const AXE = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const fx = useGateAndBrowser();

/** The violations axe-core finds on the page, as readable lines. */
async function violations(page) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  return result.violations.flatMap((v) =>
    v.nodes.map((n) => `${v.id}: ${n.target.join(" ")}: ${n.failureSummary.replace(/\s+/g, " ")}`),
  );
}

async function roomWithTraffic(room) {
  const other = await Client.open(fx.gate.url);
  await other.setName("grace", "Grace");
  await other.request({ join_room: { room_id: room, user_id: "grace" } });
  // Two in a row: the second is grouped under the first.
  await other.say(room, "grace", "First of two");
  await other.say(room, "grace", "Second of two, grouped https://example.com/a_(b)");
  return other;
}

for (const layout of [
  { name: "light", colorScheme: "light" },
  { name: "dark", colorScheme: "dark" },
  { name: "phone", colorScheme: "light", viewport: { width: 390, height: 760 } },
]) {
  test(`axe-core finds no WCAG A/AA violation in the ${layout.name} layout`, async () => {
    const room = `a11y-${layout.name}`;
    const other = await roomWithTraffic(room);
    const page = await openChat(fx.browser, fx.gate, { name: "Ada", room, ...layout });
    await waitMessage(page, "First of two");
    await sendText(page, "My own reply to @Grace");
    await waitMessage(page, "My own reply to @Grace");
    // A grouped message has no visible name; a screen reader hears it.
    const grouped = page.locator("#messages li.msg.grouped", { hasText: "Second of two" });
    assert.equal(await grouped.locator(".sr-sender").textContent(), "Grace: ");
    // One list of messages (and day lines), not a list per chunk of them.
    const list = page.getByRole("list", { name: "Messages" });
    assert.equal(await list.getByRole("list").count(), 0, "no list inside the list of messages");
    const items = await list.getByRole("listitem").count();
    assert.equal(items, await page.locator("#messages li.msg, #messages li.day").count());
    assert.ok(items >= 3, `${items} items`);
    // Away in another room while Grace names the user: back, the line marks it.
    const drawer = () => layout.viewport && page.getByRole("button", { name: "Rooms" }).click();
    await drawer();
    await page.getByLabel("Join a room").fill(`${room}-side`);
    await page.getByLabel("Join a room").press("Enter");
    await page.waitForFunction((r) => location.hash === `#${r}-side`, room);
    await other.say(room, "grace", `@${layout.name} are you there?`); // openChat's name is the layout's
    await page.locator(`#room-list a[href="#${room}"] .badge`).waitFor({ state: "attached" });
    await drawer();
    await page.locator(`#room-list a[href="#${room}"]`).click();
    await page.locator("#messages li.msg.mentions-me .unread-line").waitFor();
    const box = page.getByLabel("Message", { exact: true });
    await box.focus();
    await page.keyboard.type("a draft for @gr");
    await page.getByRole("listbox", { name: "People to mention" }).waitFor();
    const found = await violations(page);
    assert.deepEqual(found, [], `\n${found.join("\n")}`);
    await page.context().close();
    other.close();
  });
}

test("axe-core finds no violation with an edited and a deleted message, the directory open, and the banner", async () => {
  const split = await SplitGate.start();
  try {
    const page = await openChat(fx.browser, split, { name: "Ada", room: "a11y-basics" });
    await sendText(page, "to be edited");
    await sendText(page, "to be deleted");
    await waitMessage(page, "to be deleted");
    const mine = (t) => page.locator("#messages li.msg:not(.pending)", { hasText: t });
    await mine("to be edited").getByRole("button", { name: "Edit message" }).click();
    await page.getByRole("textbox", { name: "Edit message" }).fill("edited once");
    await page.getByRole("textbox", { name: "Edit message" }).press("Enter");
    await waitMessage(page, "edited once");
    await mine("to be deleted").getByRole("button", { name: "Delete message" }).click();
    await page.getByRole("group", { name: "Delete this message?" }).getByRole("button", { name: "Delete" }).click();
    await page.locator("#messages li.msg.deleted").waitFor();
    // Edit controls shown (focus within the message).
    await mine("edited once").getByRole("button", { name: "Edit message" }).focus();
    let found = await violations(page);
    assert.deepEqual(found, [], `\n${found.join("\n")}`);

    await page.getByRole("button", { name: "Browse rooms" }).click();
    await page.getByRole("dialog", { name: "Browse rooms" }).getByRole("button", { name: /# a11y-basics/ }).waitFor();
    found = await violations(page);
    assert.deepEqual(found, [], `\n${found.join("\n")}`);
    await page.getByRole("button", { name: "Close" }).click();

    await split.killServer();
    await page.locator("#conn-banner").waitFor();
    found = await violations(page);
    assert.deepEqual(found, [], `\n${found.join("\n")}`);
    await page.context().close();
  } finally {
    await split.stop();
  }
});

// Unit tests of the pure presentation helpers (node --test, no browser).
import assert from "node:assert/strict";
import { test } from "node:test";
import { badgeText, dayLabel, groupsWith, hue, linkParts, normalizeRoom, typingText } from "../format.js";

test("a link keeps a balanced trailing parenthesis and drops prose punctuation", () => {
  const wiki = "https://en.wikipedia.org/wiki/Rust_(programming_language)";
  assert.deepEqual(linkParts(`see ${wiki}`), [{ text: "see " }, { url: wiki }]);
  assert.deepEqual(linkParts(`(see ${wiki}).`), [{ text: "(see " }, { url: wiki }, { text: ")." }]);
  assert.deepEqual(linkParts("go to https://example.com/a, then"), [
    { text: "go to " },
    { url: "https://example.com/a" },
    { text: ", then" },
  ]);
  assert.deepEqual(linkParts("(https://example.com/x)"), [{ text: "(" }, { url: "https://example.com/x" }, { text: ")" }]);
});

test("only http and https become links; text without one is one part", () => {
  assert.deepEqual(linkParts("javascript:alert(1) ftp://x"), [{ text: "javascript:alert(1) ftp://x" }]);
  assert.deepEqual(linkParts(""), []);
  assert.deepEqual(linkParts("https://"), [{ text: "https://" }]);
});

test("messages group under one header when same sender, same day, within 5 minutes, not failed", () => {
  const t = Date.parse("2026-03-03T10:00:00Z");
  const a = { sender_id: "u1", timestamp: new Date(t).toISOString() };
  const soon = { sender_id: "u1", timestamp: new Date(t + 60_000).toISOString() };
  const late = { sender_id: "u1", timestamp: new Date(t + 6 * 60_000).toISOString() };
  const other = { sender_id: "u2", timestamp: new Date(t + 60_000).toISOString() };
  assert.equal(groupsWith(a, soon), true);
  assert.equal(groupsWith(a, late), false);
  assert.equal(groupsWith(a, other), false);
  assert.equal(groupsWith(a, soon, { failed: true }), false);
  assert.equal(groupsWith(null, soon), false);
});

test("day labels: today, yesterday, else the formatter", () => {
  const today = new Date(2026, 2, 3, 12);
  assert.equal(dayLabel(new Date(2026, 2, 3, 1), today), "Today");
  assert.equal(dayLabel(new Date(2026, 2, 2, 23), today), "Yesterday");
  assert.equal(dayLabel(new Date(2026, 2, 1), today, () => "Sunday"), "Sunday");
});

test("typing text names one or two people, then 'several'", () => {
  assert.equal(typingText([]), "");
  assert.equal(typingText(["bob"]), "bob is typing…");
  assert.equal(typingText(["bob", "alice"]), "alice and bob are typing…");
  assert.equal(typingText(["a", "b", "c"]), "Several people are typing…");
});

test("room names, badges, hues", () => {
  assert.equal(normalizeRoom("  ##general "), "general");
  assert.equal(badgeText(7), "7");
  assert.equal(badgeText(120), "99+");
  assert.equal(hue("alice"), hue("alice"));
  assert.ok(hue("alice") >= 0 && hue("alice") < 360);
});

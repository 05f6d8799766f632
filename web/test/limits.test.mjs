// Unit tests of the limits the client checks before the server does, and of relative times.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_CONTENT_BYTES, contentProblem, relativeTime, roomProblem, utf8Bytes } from "../format.js";

test("bytes are counted in UTF-8, as the server counts them", () => {
  assert.equal(utf8Bytes(""), 0);
  assert.equal(utf8Bytes("abc"), 3);
  assert.equal(utf8Bytes("é"), 2);
  assert.equal(utf8Bytes("€"), 3);
  assert.equal(utf8Bytes("😀"), 4); // one code point, two UTF-16 units
});

test("content over the byte limit is refused with the count, at the limit it passes", () => {
  assert.equal(contentProblem("a".repeat(MAX_CONTENT_BYTES)), null);
  assert.match(contentProblem("a".repeat(MAX_CONTENT_BYTES + 1)), /4097 bytes, the limit is 4096/);
  // 2,048 "é" are 4,096 bytes; one more is over although only 2,049 characters.
  assert.equal(contentProblem("é".repeat(2048)), null);
  assert.match(contentProblem("é".repeat(2049)), /4098 bytes/);
  assert.match(contentProblem("  \n "), /empty/);
  assert.match(contentProblem("abcdef", 5), /6 bytes, the limit is 5/);
});

test("room names are limited to 128 bytes, not characters", () => {
  assert.equal(roomProblem("general"), null);
  assert.equal(roomProblem("é".repeat(64)), null);
  assert.match(roomProblem("é".repeat(100)), /at most 128 bytes; this one is 200/);
  assert.match(roomProblem(""), /Type a room name/);
  assert.match(roomProblem("abcdef", 5), /at most 5 bytes; this one is 6/);
});

test("relative times read naturally and fall back to the date", () => {
  const now = new Date("2026-12-02T12:00:00Z");
  const ago = (ms) => relativeTime(new Date(now - ms), now);
  assert.equal(ago(10 * 1000), "just now");
  assert.equal(ago(-5000), "just now"); // a clock slightly ahead
  assert.equal(ago(5 * 60 * 1000), "5 min ago");
  assert.equal(ago(3 * 3600 * 1000), "3 h ago");
  assert.equal(ago(30 * 3600 * 1000), "yesterday");
  assert.equal(ago(5 * 86400 * 1000), "5 days ago");
  assert.equal(relativeTime(new Date("2026-01-01T00:00:00Z"), now, () => "Jan 1"), "Jan 1");
  assert.equal(relativeTime(new Date("nonsense"), now), "");
});

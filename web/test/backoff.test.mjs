import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay } from "../backoff.js";

test("backoff doubles from 250 ms to at most 10 s, jittered to 0.5..1 of that", () => {
  assert.equal(backoffDelay(1, { rand: () => 0.999999 }), 250);
  assert.equal(backoffDelay(1, { rand: () => 0 }), 125);
  assert.equal(backoffDelay(3, { rand: () => 0.999999 }), 1000);
  assert.equal(backoffDelay(30, { rand: () => 0.999999 }), 10000);
  assert.equal(backoffDelay(30, { rand: () => 0 }), 5000);
});

// Unit tests of the @mention syntax (node --test, no browser).
import assert from "node:assert/strict";
import { test } from "node:test";
import { completeMention, completions, mentionParts, mentionQuery, mentionsUser } from "../mention.js";

const ann = { id: "u-ann", name: "Ann" };
const annLee = { id: "u-annlee", name: "Ann Lee" };
const bob = { id: "u-bob", name: "bob" };

test("a mention is @ and a name, case-insensitive, ended by a non-word character or the end", () => {
  assert.deepEqual(mentionParts("hi @ann, look", [ann]), [{ text: "hi " }, { text: "@ann", id: "u-ann" }, { text: ", look" }]);
  assert.deepEqual(mentionParts("@ANN", [ann]), [{ text: "@ANN", id: "u-ann" }]);
  assert.deepEqual(mentionParts("@Anna is not Ann", [ann]), [{ text: "@Anna is not Ann" }]);
  assert.deepEqual(mentionParts("@Ann_x", [ann]), [{ text: "@Ann_x" }]);
  assert.deepEqual(mentionParts("(@Ann)", [ann]), [{ text: "(" }, { text: "@Ann", id: "u-ann" }, { text: ")" }]);
});

test("a user id mentions too, and an @ inside a word (an address) does not", () => {
  assert.deepEqual(mentionParts("ping @u-bob", [bob]), [{ text: "ping " }, { text: "@u-bob", id: "u-bob" }]);
  assert.deepEqual(mentionParts("mail bob@bob.example", [bob]), [{ text: "mail bob@bob.example" }]);
});

test("a name with spaces is one mention, the longest name that fits wins", () => {
  assert.deepEqual(mentionParts("@Ann Lee: and @Ann", [ann, annLee]), [
    { text: "@Ann Lee", id: "u-annlee" },
    { text: ": and " },
    { text: "@Ann", id: "u-ann" },
  ]);
});

test("text without a known name is one part; nothing is one part fewer", () => {
  assert.deepEqual(mentionParts("@nobody here", [ann]), [{ text: "@nobody here" }]);
  assert.deepEqual(mentionParts("", [ann]), []);
  assert.deepEqual(mentionParts("@", []), [{ text: "@" }]);
});

test("mentionsUser tells whether the user is named", () => {
  assert.equal(mentionsUser("thanks @bob!", bob), true);
  assert.equal(mentionsUser("thanks @bobby", bob), false);
  assert.equal(mentionsUser("@Ann Lee", ann), true, "Ann is named when alone on her list");
  assert.equal(mentionsUser("@Ann Lee", annLee), true);
});

test("the mention being typed is found at the caret", () => {
  assert.deepEqual(mentionQuery("hello @an", 9), { start: 6, query: "an" });
  assert.deepEqual(mentionQuery("@", 1), { start: 0, query: "" });
  assert.deepEqual(mentionQuery("@Ann L", 6), { start: 0, query: "Ann L" });
  assert.equal(mentionQuery("mail a@b", 8), null);
  assert.equal(mentionQuery("no mention", 10), null);
  assert.equal(mentionQuery("@ann\nnext", 9), null);
});

test("completions match the start of a name or id; completing writes the whole name", () => {
  assert.deepEqual(completions("an", [bob, annLee, ann]), [ann, annLee]);
  assert.deepEqual(completions("U-B", [bob, ann]), [bob]);
  assert.deepEqual(completeMention("hi @an there", 3, 6, annLee), { text: "hi @Ann Lee there", caret: 12 });
  assert.deepEqual(completeMention("@b", 0, 2, bob), { text: "@bob ", caret: 5 });
});

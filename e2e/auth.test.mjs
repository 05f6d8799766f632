// The web client against a gateway run with `--auth jwt`: signing in the
// ways a real app hands a page its token (a sign-in link's fragment, an
// HttpOnly cookie), renewing before expiry, and saying why when refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, Client, sendText, useGateAndBrowser, waitConnected, waitMessage } from "./lib.mjs";

const keys = mkdtempSync(path.join(os.tmpdir(), "wsgate-e2e-keys-"));
const SECRET = path.join(keys, "jwt.secret");
const OTHER_SECRET = path.join(keys, "other.secret");
writeFileSync(SECRET, "e2e-secret-of-at-least-thirty-two-bytes-0001\n");
writeFileSync(OTHER_SECRET, "another-secret-the-gateway-does-not-know-02\n");

// No leeway, so that expiry happens when the test says.
const fx = useGateAndBrowser({ args: ["--auth", "jwt", "--jwt-secret-file", SECRET, "--jwt-leeway", "0"] });

/** A token from `wsgate token`, as a test app's backend would issue one. */
function mint(user, { ttl = "1h", name, secret = SECRET } = {}) {
  const args = ["token", "--user", user, "--ttl", ttl, "--jwt-secret-file", secret];
  if (name) args.push("--name", name);
  return execFileSync(BIN, args, { encoding: "utf8" }).trim();
}

const expOf = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).exp;

async function newPage(context) {
  const page = await context.newPage();
  page.on("pageerror", (e) => {
    page.errors = page.errors || [];
    page.errors.push(e);
  });
  return page;
}

async function signedInAs(page) {
  await page.locator("#signed-in").waitFor();
  return page.locator("#signed-in-sub").textContent();
}

async function senderOf(room, content) {
  const reader = await Client.open(fx.gate.url, { token: mint("reader") });
  try {
    return (await reader.history(room)).find((m) => m.content === content)?.sender_id;
  } finally {
    reader.close();
  }
}

test("a sign-in link signs the page in as the token's user, and its token leaves the URL", async () => {
  const token = mint("alice", { name: "Ada" });
  const context = await fx.browser.newContext();
  const page = await newPage(context);
  await page.goto(`${fx.gate.url}/#token=${token}&room=welcome`);
  await waitConnected(page);

  assert.equal(new URL(page.url()).hash, "#welcome");
  assert.equal(await signedInAs(page), "alice");
  await page.waitForFunction(() => document.getElementById("name").value === "Ada");
  assert.equal(await page.locator("#sign-out").isVisible(), true);
  await sendText(page, "hello as alice");
  await waitMessage(page, "hello as alice");
  assert.equal(await senderOf("welcome", "hello as alice"), "alice");

  // A reload stays signed in (the page keeps the token until it expires).
  await page.reload();
  await waitConnected(page);
  assert.equal(await signedInAs(page), "alice");
  assert.ok(!page.url().includes(token));

  // Signing out forgets it: the page says so and does not reconnect.
  await page.locator("#sign-out").click();
  await page.locator("#signin").waitFor();
  assert.match(await page.locator("#signin-text").textContent(), /signed out/i);
  assert.equal(await page.evaluate(() => localStorage.getItem("wsgate.auth.token")), null);
  assert.equal(await page.locator("#status").getAttribute("data-state"), "signed-out");
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

test("without a token the page asks for a sign-in, and a sign-in link opened later signs it in", async () => {
  const context = await fx.browser.newContext();
  const page = await newPage(context);
  await page.goto(`${fx.gate.url}/#lobby`);
  await page.locator("#signin").waitFor();
  assert.match(await page.locator("#signin-text").textContent(), /needs you to sign in/);
  assert.equal(await page.locator("#content").isHidden(), true);

  await page.evaluate((t) => {
    location.hash = `#token=${t}&room=lobby`;
  }, mint("bob"));
  await waitConnected(page);
  assert.equal(await signedInAs(page), "bob");
  assert.equal(await page.locator("#signin").isHidden(), true);
  assert.equal(new URL(page.url()).hash, "#lobby");
  await sendText(page, "bob made it");
  await waitMessage(page, "bob made it");
  assert.equal(await senderOf("lobby", "bob made it"), "bob");
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

test("a token the gateway refuses is forgotten, and the page says why", async () => {
  const context = await fx.browser.newContext();
  const page = await newPage(context);
  await page.goto(`${fx.gate.url}/#token=${mint("mallory", { secret: OTHER_SECRET })}`);
  await page.locator("#signin").waitFor();
  assert.match(await page.locator("#signin-text").textContent(), /sign-in was refused \(.+\)/);
  assert.equal(await page.evaluate(() => localStorage.getItem("wsgate.auth.token")), null);
  await context.close();
});

test("a token that expires without renewal signs the page out, saying so", async () => {
  const context = await fx.browser.newContext();
  const page = await newPage(context);
  await page.goto(`${fx.gate.url}/#token=${mint("erin", { ttl: "3s" })}&room=brief`);
  await waitConnected(page);
  assert.match(await page.locator("#signed-in-until").textContent(), /until/);
  // The gateway closes the connection at the token's expiry (1008 "token expired").
  await page.locator("#signin").waitFor({ timeout: 15000 });
  assert.match(await page.locator("#signin-text").textContent(), /session has expired/);
  await context.close();
});

test("with the app's token endpoint, the page renews before expiry and keeps its connection", async () => {
  const context = await fx.browser.newContext();
  // The app's page names its token endpoint; the endpoint answers fresh tokens.
  const here = path.dirname(fileURLToPath(import.meta.url));
  const html = readFileSync(path.join(here, "../web/index.html"), "utf8").replace(
    "<title>",
    '<meta name="wsgate-token-url" content="/app/chat-token">\n<title>',
  );
  await context.route(
    (url) => url.pathname === "/",
    (route) => route.fulfill({ contentType: "text/html", body: html }),
  );
  let renewed;
  const firstRenewal = new Promise((resolve) => (renewed = resolve));
  await context.route(
    (url) => url.pathname === "/app/chat-token",
    (route) => {
      route.fulfill({ contentType: "application/json", body: JSON.stringify({ token: mint("carol", { ttl: "1h" }) }) });
      renewed();
    },
  );
  const page = await newPage(context);
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws));
  const first = mint("carol", { ttl: "6s" });
  await page.goto(`${fx.gate.url}/#token=${first}&room=renewals`);
  await waitConnected(page);
  assert.equal(await page.locator("#signed-in-until").textContent(), "");

  await firstRenewal;
  // Past the first token's expiry, the same connection still works.
  await page.waitForFunction((exp) => Date.now() > exp * 1000 + 500, expOf(first), { timeout: 15000 });
  await sendText(page, "renewed and still here");
  await waitMessage(page, "renewed and still here");
  assert.equal(sockets.length, 1);
  assert.equal(await page.locator("#signin").isHidden(), true);
  assert.equal(await senderOf("renewals", "renewed and still here"), "carol");
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

test("an app's HttpOnly cookie signs the page in; signing out is the app's to do", async () => {
  const context = await fx.browser.newContext();
  await context.addCookies([
    { name: "wsgate_token", value: mint("dave", { name: "Dave" }), url: fx.gate.url, httpOnly: true, sameSite: "Strict" },
  ]);
  const page = await newPage(context);
  await page.goto(`${fx.gate.url}/#cookies`);
  await waitConnected(page);
  assert.equal(await signedInAs(page), "dave");
  // The page never sees this token: the name comes from the server, which the token's name claim seeded.
  await page.waitForFunction(() => document.getElementById("name").value === "Dave");
  assert.equal(await page.locator("#sign-out").isHidden(), true);
  await sendText(page, "dave by cookie");
  await waitMessage(page, "dave by cookie");
  assert.equal(await senderOf("cookies", "dave by cookie"), "dave");
  assert.deepEqual(page.errors || [], []);
  await context.close();
});

// Shared helpers of the browser tests: start the real wsgate binary on free
// ports with a fresh database, talk to it over WebSocket from node, and
// launch Chromium through playwright-core.
import { spawn } from "node:child_process";
import { after, before } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = path.resolve(here, process.env.WSGATE_BIN || "../target/debug/wsgate");
// The tests fill rooms with scripted clients that send hundreds of frames at
// once, past the per-connection frame rate a deployment wants (20/s, bursts
// of 100); the web client's own traffic stays far below it.
const GATEWAY_ENV = { WSGATE_MAX_FRAMES_PER_SECOND: "10000", WSGATE_FRAME_BURST: "10000" };
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const SCREENSHOTS = path.join(here, "screenshots");

/** A port nothing listens on right now (the OS picks it; we release it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitHealthy(url, proc, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`wsgate exited early (${proc.exitCode ?? proc.signalCode})`);
    }
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`wsgate not healthy at ${url} in time`);
    // Poll again on the next turn of a short timer (a probe interval, not a wait for a result).
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A running wsgate (chat server + gateway in one process).
 * `restart()` starts it again on the same ports and database.
 */
export class Gate {
  /** `args`: more flags for the binary (e.g. `--auth jwt ...`). */
  static async start({ args = [] } = {}) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "wsgate-e2e-"));
    const gate = new Gate(path.join(dir, "chat.db"), dir);
    gate.args = args;
    for (let tries = 0; ; tries++) {
      gate.port = await freePort();
      gate.grpcPort = await freePort();
      try {
        await gate.spawn();
        return gate;
      } catch (e) {
        if (tries >= 4 || !/in use|EADDRINUSE|exited early/i.test(String(e.message) + gate.stderr)) throw e;
      }
    }
  }

  constructor(db, dir) {
    this.db = db;
    this.dir = dir;
    this.args = [];
    this.proc = null;
    this.stderr = "";
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async spawn() {
    this.stderr = "";
    const proc = spawn(
      BIN,
      [
        "--db",
        this.db,
        "--listen",
        `127.0.0.1:${this.port}`,
        "--grpc-listen",
        `127.0.0.1:${this.grpcPort}`,
        ...this.args,
      ],
      {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, ...GATEWAY_ENV, RUST_LOG: process.env.RUST_LOG || "warn" },
      },
    );
    proc.stderr.on("data", (d) => {
      this.stderr += d;
      if (process.env.E2E_VERBOSE) process.stderr.write(d);
    });
    this.proc = proc;
    this.exited = new Promise((r) => proc.once("exit", r));
    try {
      await waitHealthy(this.url, proc, 15000);
    } catch (e) {
      proc.kill("SIGKILL");
      throw new Error(`${e.message}\n${this.stderr}`);
    }
  }

  async kill(signal = "SIGKILL") {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }

  async restart() {
    await this.kill();
    // The old process is gone, but retry briefly in case the port lingers.
    for (let tries = 0; ; tries++) {
      try {
        return await this.spawn();
      } catch (e) {
        if (tries >= 20) throw e;
      }
    }
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function waitPort(port, proc, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  return new Promise((resolve, reject) => {
    const probe = () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return reject(new Error("wsgate server exited early"));
      const sock = net.connect(port, "127.0.0.1");
      sock.once("connect", () => (sock.destroy(), resolve()));
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port} in time`));
        else setTimeout(probe, 50);
      });
    };
    probe();
  });
}

/**
 * The chat server and the gateway as two processes (`wsgate server`,
 * `wsgate proxy`), so the upstream can die while browsers stay connected.
 */
export class SplitGate {
  static async start() {
    const dir = mkdtempSync(path.join(os.tmpdir(), "wsgate-e2e-"));
    const g = new SplitGate(path.join(dir, "chat.db"), dir);
    g.port = await freePort();
    g.grpcPort = await freePort();
    await g.startServer();
    g.proxy = spawn(BIN, ["proxy", "--listen", `127.0.0.1:${g.port}`, "--upstream", `http://127.0.0.1:${g.grpcPort}`], {
      stdio: ["ignore", "ignore", process.env.E2E_VERBOSE ? "inherit" : "ignore"],
      env: { ...process.env, ...GATEWAY_ENV },
    });
    await waitHealthy(g.url, g.proxy, 15000);
    return g;
  }

  constructor(db, dir) {
    this.db = db;
    this.dir = dir;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async startServer() {
    const proc = spawn(BIN, ["server", "--db", this.db, "--grpc-listen", `127.0.0.1:${this.grpcPort}`], {
      stdio: ["ignore", "ignore", process.env.E2E_VERBOSE ? "inherit" : "ignore"],
    });
    this.server = proc;
    this.serverExited = new Promise((r) => proc.once("exit", r));
    await waitPort(this.grpcPort, proc, 15000);
  }

  async killServer() {
    this.server.kill("SIGKILL");
    await this.serverExited;
  }

  async stop() {
    for (const p of [this.proxy, this.server]) {
      if (p && p.exitCode === null && p.signalCode === null) {
        const gone = new Promise((r) => p.once("exit", r));
        p.kill("SIGKILL");
        await gone;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A protocol client from node (seeding, checking history). */
export class Client {
  /** `token`: sign in with it (the `bearer.` subprotocol), for a gateway run with `--auth jwt`. */
  static open(url, { token } = {}) {
    return new Promise((resolve, reject) => {
      const protocols = token ? ["wsgate.v1", `bearer.${token}`] : [];
      const ws = new WebSocket(url.replace(/^http/, "ws") + "/", protocols);
      ws.once("open", () => resolve(new Client(ws)));
      ws.once("error", reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.next = 1;
    this.waiting = new Map();
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data));
      const w = frame.request_id && this.waiting.get(frame.request_id);
      if (w) {
        this.waiting.delete(frame.request_id);
        if (frame.error) w.reject(new Error(`${frame.error.code}: ${frame.error.message}`));
        else w.resolve(frame);
      }
    });
  }

  request(frame, timeoutMs = 10000) {
    const request_id = `n${this.next++}`;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(frame)}`)), timeoutMs);
      this.waiting.set(request_id, {
        resolve: (f) => (clearTimeout(t), resolve(f)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.ws.send(JSON.stringify({ ...frame, request_id }));
    });
  }

  setName(user_id, name) {
    return this.request({ set_user_name: { user_id, name } });
  }

  /** Sends and waits for the stored echo (the confirmation). */
  say(room_id, sender_id, content, id = "") {
    return this.request({ chat_message: { id, room_id, sender_id, content } });
  }

  async history(room_id) {
    const all = [];
    let after = 0;
    for (;;) {
      const f = await this.request({ get_chat_history: { room_id, after_seq: after, limit: 500 } });
      all.push(...f.chat_history.messages);
      if (!f.chat_history.has_more) return all;
      after = Number(all[all.length - 1].seq);
    }
  }

  close() {
    this.ws.close();
  }
}

/**
 * Starts a fresh wsgate (own ports, own database) and a browser before the
 * calling file's tests, and stops both after them. `options` go to `Gate.start`.
 * @returns {{gate: Gate, browser: import("playwright-core").Browser}}
 */
export function useGateAndBrowser(options = {}) {
  const fixture = {};
  before(async () => {
    fixture.gate = await Gate.start(options);
    fixture.browser = await launch();
  });
  after(async () => {
    await fixture.browser?.close();
    await fixture.gate?.stop();
  });
  return fixture;
}

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      // A page a test serves itself (page.route) has no address space, and
      // Chromium's Local Network Access checks would then block its
      // WebSocket to loopback; pages the gateway serves are not affected.
      "--disable-features=LocalNetworkAccessChecks",
    ],
  });
}

/** A page as a given user (name preset in localStorage), opened on `room`. */
export async function openChat(browser, gate, { name, room, viewport, colorScheme } = {}) {
  const context = await browser.newContext({
    viewport: viewport || { width: 1100, height: 720 },
    colorScheme: colorScheme || "light",
  });
  if (name) {
    await context.addInitScript((n) => {
      if (!localStorage.getItem("wsgate.userName")) localStorage.setItem("wsgate.userName", JSON.stringify(n));
    }, name);
  }
  const page = await context.newPage();
  page.on("pageerror", (e) => {
    page.errors = page.errors || [];
    page.errors.push(e);
  });
  await page.goto(`${gate.url}/${room ? `#${encodeURIComponent(room)}` : ""}`);
  await waitConnected(page);
  return page;
}

export function waitConnected(page, timeout = 15000) {
  // Attached, not visible: on a phone the status sits in the closed drawer.
  return page.locator('#status[data-state="connected"]').waitFor({ state: "attached", timeout });
}

/** Types into the composer and presses Enter. */
export async function sendText(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

/** Waits until a confirmed (not pending) message with exactly this text is shown. */
export function waitMessage(page, text, timeout = 15000) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages li.msg:not(.pending) .text")].some((e) => e.textContent === t),
    text,
    { timeout },
  );
}

// The viewer's player over time and through a bad network, against a server of its own: its
// media goes through a UDP relay the test controls (MEDIA_CANDIDATE_ADDR announces the relay), and
// viewer tokens live 60 s, the shortest lifetime the server allows. Page time runs on Playwright's
// clock, so minutes of heartbeats and token refreshes take a moment.
import { test, expect, type Page } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { createSocket, type Socket, type RemoteInfo } from "node:dgram";
import { mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { closeContexts, newPage, decodedFrames } from "./pages";

const ROOT = resolve("..");
const API_KEY = "resilience-e2e-key-0123456789";
const VIEWER_TOKEN_SECS = 60;

/**
 * Forwards UDP between peers and the server's media port. `cut()` drops every datagram of the
 * flows not marked as kept (both ways) until `restore()`.
 */
class Relay {
  private socket: Socket = createSocket("udp4");
  private flows = new Map<string, Socket>();
  private kept = new Set<string>();
  private cutting = false;
  /** Every peer address seen, forwarded or not. */
  sources = new Set<string>();
  dropped = 0;
  target = 0;

  async listen(): Promise<number> {
    await new Promise<void>((ok) => this.socket.bind(0, "127.0.0.1", ok));
    this.socket.on("message", (msg, from) => this.fromPeer(msg, from));
    return this.socket.address().port;
  }

  private fromPeer(msg: Buffer, from: RemoteInfo) {
    const key = `${from.address}:${from.port}`;
    this.sources.add(key);
    if (this.cutting && !this.kept.has(key)) {
      this.dropped++;
      return;
    }
    let upstream = this.flows.get(key);
    if (!upstream) {
      upstream = createSocket("udp4");
      upstream.bind(0, "127.0.0.1");
      upstream.on("message", (reply) => {
        if (this.cutting && !this.kept.has(key)) {
          this.dropped++;
          return;
        }
        this.socket.send(reply, from.port, from.address);
      });
      this.flows.set(key, upstream);
    }
    upstream.send(msg, this.target, "127.0.0.1");
  }

  /** The flows seen so far keep working through a cut. */
  keepCurrentFlows() {
    for (const k of this.flows.keys()) this.kept.add(k);
  }
  cut() {
    this.cutting = true;
  }
  restore() {
    this.cutting = false;
  }
  close() {
    for (const s of this.flows.values()) s.close();
    this.socket.close();
  }
}

let server: ChildProcess | undefined;
let base = "";
const relay = new Relay();
let studio: Page | undefined;

/** Starts the server; resolves with its URL and media port, as it logs them (bounded by 60 s). */
function startServer(env: NodeJS.ProcessEnv): Promise<[ChildProcess, string, number]> {
  return new Promise((ok, fail) => {
    const child = spawn(join(ROOT, "target", "release", "livestage"), [], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const timer = setTimeout(() => fail(new Error("the server did not start")), 60_000);
    let url = "";
    let mediaPort = 0;
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        const media = line.match(/media server listening.*local=[^\s:]+:(\d+)/);
        if (media) mediaPort = Number(media[1]);
        const at = line.indexOf("listening on ");
        if (at >= 0) url = line.slice(at + "listening on ".length).trim().split(/\s/)[0];
        if (url && mediaPort) {
          clearTimeout(timer);
          ok([child, url, mediaPort]);
        }
      });
    }
    child.on("exit", (code) => fail(new Error(`the server exited with ${code}`)));
  });
}

async function expectFramesAdvance(page: Page) {
  await expect.poll(() => decodedFrames(page), { timeout: 10_000 }).toBeGreaterThan(0);
  const before = await decodedFrames(page);
  await expect.poll(() => decodedFrames(page), { timeout: 5_000 }).toBeGreaterThan(before + 5);
}

async function totalViewers(page: Page): Promise<number> {
  const r = await page.request.get(`${base}/api/stats`, { headers: { "x-api-key": API_KEY } });
  return (await r.json()).data.totalViewers;
}

test.describe.configure({ mode: "serial" });

test.beforeAll(async ({ browser }) => {
  test.setTimeout(120_000);
  const bin = join(ROOT, "target", "release", "livestage");
  expect(existsSync(bin), `${bin} is built`).toBe(true);
  const relayPort = await relay.listen();
  let mediaPort: number;
  [server, base, mediaPort] = await startServer({
    API_SECRET_KEY: API_KEY,
    APP_DATA_DIR: mkdtempSync(join(tmpdir(), "livestage-resilience-")),
    DATABASE_URL: "",
    STAGE_BACKEND: "local",
    LEPTOS_SITE_ADDR: "127.0.0.1:0",
    MEDIA_UDP_PORT: "0",
    MEDIA_CANDIDATE_ADDR: `127.0.0.1:${relayPort}`,
    VIEWER_TOKEN_DURATION: String(VIEWER_TOKEN_SECS),
    NO_COLOR: "1",
  });
  relay.target = mediaPort;

  // The broadcaster goes live through the relay; its flows survive the cuts below.
  studio = await newPage(browser, "/broadcast", base);
  await studio.getByTestId("api-key").fill(API_KEY);
  await studio.getByTestId("sign-in").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "preview", { timeout: 15_000 });
  await studio.getByTestId("go-live").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
  await expect(studio.getByTestId("live-badge")).toHaveText("● LIVE", { timeout: 10_000 });
  relay.keepCurrentFlows();
});

// The studio goes live once for every test here; each test closes its own viewers.
test.afterAll(async ({ browser }) => {
  await closeContexts({ browser });
  server?.kill("SIGTERM");
  relay.close();
});

test("the player reconnects on its own after the network drops, and is counted once", async ({ browser }) => {
  test.setTimeout(120_000);
  const viewer = await newPage(browser, "/", base);
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 20_000 });
  await expectFramesAdvance(viewer);
  await expect(viewer.getByTestId("viewer-count")).toHaveText("1 watching");

  // The viewer's network goes away: no media reaches it, and the player says so.
  relay.cut();
  const sourcesAtCut = relay.sources.size;
  const droppedBefore = relay.dropped;
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "reconnecting", { timeout: 20_000 });
  const stalled = await decodedFrames(viewer);
  await viewer.waitForTimeout(2_000);
  expect(await decodedFrames(viewer), "no frames while the network is down").toBeLessThanOrEqual(stalled + 1);
  expect(relay.dropped, "the relay dropped the viewer's media").toBeGreaterThan(droppedBefore);

  // The player gives the dead connection up and starts a new one, which tries to reach the server
  // through the relay and cannot while the network is down.
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", /joining|connecting/, { timeout: 20_000 });
  await expect.poll(() => relay.sources.size, { timeout: 10_000 }).toBeGreaterThan(sourcesAtCut);
  await viewer.waitForTimeout(1_000);
  await expect(viewer.locator("#player")).not.toHaveAttribute("data-state", "playing");

  // The network comes back: the player plays again without a reload.
  relay.restore();
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 30_000 });
  await expectFramesAdvance(viewer);
  await expect(viewer.getByTestId("viewer-count")).toHaveText("1 watching", { timeout: 10_000 });
  expect(await totalViewers(viewer), "the reconnected viewer is counted once").toBe(1);
  await viewer.context().close();
});

test("heartbeats every 30 s and a token refresh at 80 % of its lifetime keep the viewer playing", async ({ browser }) => {
  test.setTimeout(120_000);
  const context = await browser.newContext({ baseURL: base });
  await context.clock.install();
  // Server-function calls, with the page's (Playwright-controlled) time of each: when it was made
  // and when its answer came.
  await context.addInitScript(() => {
    const calls: { fn: string; at: number; answered: number }[] = [];
    (window as unknown as { __calls: typeof calls }).__calls = calls;
    const original = window.fetch.bind(window);
    window.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      const fn = ["join_stream", "send_heartbeat"].find((f) => url.includes(f));
      if (!fn) return original(input, init);
      const at = Date.now();
      return original(input, init).then((r) => {
        calls.push({ fn, at, answered: Date.now() });
        return r;
      });
    };
  });
  const viewer = await context.newPage();
  viewer.on("pageerror", (e) => console.log(`[page error] ${e}`));
  await viewer.goto("/");
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 20_000 });
  await expectFramesAdvance(viewer);
  type Call = { fn: string; at: number; answered: number };
  const calls = async (fn: string) =>
    (await viewer.evaluate(() => (window as unknown as { __calls: Call[] }).__calls)).filter((c) => c.fn === fn);

  const joins = await calls("join_stream");
  expect(joins.length, "one join").toBe(1);
  const joined = joins[0].answered;

  // 150 s of page time in 1 s steps, each followed by a pause for the calls it fired to finish.
  for (let i = 0; i < 150; i++) {
    await viewer.clock.runFor(1_000);
    await viewer.waitForTimeout(40);
  }
  const now = await viewer.evaluate(() => Date.now());
  const beats = await calls("send_heartbeat");
  const refreshes = (await calls("join_stream")).slice(1);
  const after = (list: Call[], from: number) => list.map((c) => c.at - from);

  // Heartbeats: the first 30 s after joining, then every 30 s, none missing up to now.
  expect(beats.length, `heartbeats at ${after(beats, joined)} ms after joining`).toBeGreaterThanOrEqual(4);
  beats.forEach((b, i) => expect(Math.abs(b.at - joined - (i + 1) * 30_000), `heartbeat ${i + 1}`).toBeLessThan(1_500));
  expect(now - beats[beats.length - 1].at, "no heartbeat missing").toBeLessThan(30_000 + 1_500);

  // Token refresh: each at 80 % of the lifetime of the token before it, none missing up to now.
  const refreshAfter = VIEWER_TOKEN_SECS * 800;
  expect(refreshes.length, `refreshes at ${after(refreshes, joined)} ms after joining`).toBeGreaterThanOrEqual(2);
  let previous = joined;
  for (const [i, r] of refreshes.entries()) {
    expect(Math.abs(r.at - previous - refreshAfter), `refresh ${i + 1}`).toBeLessThan(1_500);
    previous = r.answered;
  }
  expect(now - previous, "no refresh missing").toBeLessThan(refreshAfter + 1_500);

  // Through all of it: one connection, still playing, counted once.
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing");
  await expectFramesAdvance(viewer);
  expect(await totalViewers(viewer)).toBe(1);
  await context.close();
});

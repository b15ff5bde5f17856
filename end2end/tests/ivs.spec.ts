// The pages on the IVS backend: a second server runs with STAGE_BACKEND=ivs against the fake IVS
// API (`cargo run --example fake-ivs`), and the IVS Web Broadcast SDK is answered by a stand-in
// (fixtures/ivs-sdk-stub.js), since nothing here may reach AWS. The test plays the media side of
// IVS through the fake's /_fake routes.
import { test, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { createHash } from "node:crypto";
import { closeContexts, decodedFrames } from "./pages";

test.afterEach(closeContexts);

const ROOT = resolve("..");
const SDK_URL = "https://web-broadcast.live-video.net/1.41.0/amazon-ivs-web-broadcast.js";
const STUB = readFileSync(resolve("fixtures", "ivs-sdk-stub.js"), "utf8");
// The stand-in's Subresource Integrity hash, which the server hands the pages.
const STUB_INTEGRITY = `sha384-${createHash("sha384").update(STUB).digest("base64")}`;
const API_KEY = "ivs-e2e-key-0123456789";

let fake: ChildProcess | undefined;
let server: ChildProcess | undefined;
let fakeUrl = "";
let base = "";

/** Starts `cmd`, resolving with the first URL printed after `marker` (bounded by 60 s). */
function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, marker: string): Promise<[ChildProcess, string]> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => fail(new Error(`${cmd} did not start`)), 60_000);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        const at = line.indexOf(marker);
        if (at >= 0) {
          clearTimeout(timer);
          ok([child, line.slice(at + marker.length).trim().split(/\s/)[0]]);
        }
      });
    }
    child.on("exit", (code) => fail(new Error(`${cmd} exited with ${code}`)));
  });
}

test.beforeAll(async () => {
  const fakeBin = join(ROOT, "target", "debug", "examples", "fake-ivs");
  const serverBin = join(ROOT, "target", "release", "livestage");
  expect(existsSync(fakeBin), `${fakeBin} is built`).toBe(true);
  expect(existsSync(serverBin), `${serverBin} is built`).toBe(true);
  [fake, fakeUrl] = await start(fakeBin, ["127.0.0.1:0"], {}, "listening on ");
  [server, base] = await start(
    serverBin,
    [],
    {
      STAGE_BACKEND: "ivs",
      AWS_REGION: "eu-west-1",
      IVS_ENDPOINT_URL: fakeUrl,
      IVS_POLL_INTERVAL_MS: "300",
      AWS_ACCESS_KEY_ID: "AKIDFAKEIVS",
      AWS_SECRET_ACCESS_KEY: "fake-secret",
      AWS_EC2_METADATA_DISABLED: "true",
      API_SECRET_KEY: API_KEY,
      APP_DATA_DIR: mkdtempSync(join(tmpdir(), "livestage-ivs-")),
      DATABASE_URL: "",
      LEPTOS_SITE_ADDR: "127.0.0.1:0",
      MEDIA_UDP_PORT: "0",
      IVS_WEB_SDK_INTEGRITY: STUB_INTEGRITY,
      NO_COLOR: "1",
    },
    "listening on ",
  );
});

test.afterAll(() => {
  server?.kill();
  fake?.kill();
});

/** A browser context whose requests for the IVS SDK are answered by the stand-in; counts them. */
async function ivsContext(browser: Browser): Promise<[BrowserContext, () => number]> {
  const context = await browser.newContext();
  let fetched = 0;
  await context.route(SDK_URL, (route) => {
    fetched++;
    return route.fulfill({ contentType: "application/javascript", headers: { "access-control-allow-origin": "*" }, body: STUB });
  });
  return [context, () => fetched];
}

async function open(context: BrowserContext, url: string): Promise<Page> {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`[page error] ${e}`));
  await page.goto(url);
  await expect(page.locator('[data-hydrated="true"]').first()).toBeVisible();
  return page;
}

const stubCalls = (page: Page) => page.evaluate(() => (window as any).__ivsStub?.calls ?? []);
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
const fakeState = async () => (await fetch(`${fakeUrl}/_fake/state`)).json();
const fakePost = (path: string, body: object) =>
  fetch(`${fakeUrl}/_fake/${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

test("on the IVS backend the pages publish and play through the IVS Web Broadcast SDK", async ({ browser }) => {
  test.setTimeout(120_000);

  // Broadcaster: the OBS settings name the stage's IVS WHIP endpoint; going live joins the stage
  // through the SDK with a self-signed PUBLISH token and publishes camera and microphone.
  const [studioContext, studioFetches] = await ivsContext(browser);
  const studio = await open(studioContext, `${base}/broadcast`);
  await studio.getByTestId("api-key").fill(API_KEY);
  await studio.getByTestId("sign-in").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "preview", { timeout: 15_000 });
  expect(studioFetches(), "the SDK is fetched only when it is needed").toBe(0);
  await expect(studio.getByTestId("obs-server")).toHaveValue(/^https:\/\/[a-z0-9]+\.global-bm\.whip\.live-video\.net$/);
  await studio.getByTestId("go-live").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 15_000 });
  expect(studioFetches()).toBe(1);
  // It was loaded with the integrity hash the server holds for it: a changed script is refused.
  const integrity = await studio.evaluate(() => document.getElementById("ivs-web-broadcast-sdk")?.getAttribute("integrity"));
  expect(integrity).toBe(STUB_INTEGRITY);
  const calls = await stubCalls(studio);
  const publish = calls.find((c: any) => c.op === "publish");
  expect(publish.kinds.sort()).toEqual(["audio", "video"]);
  expect(publish.live).toEqual(["live", "live"]);
  const token = calls.find((c: any) => c.op === "new").token;
  const claims = claimsOf(token);
  expect(claims.capabilities).toEqual({ allow_publish: true, allow_subscribe: false });
  const state = await fakeState();
  const kid = JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString()).kid;
  expect(state.keys.map((k: any) => k.arn), "the token's kid is the key registered with IVS").toContain(kid);
  expect(state.stages.map((s: any) => s.arn)).toContain(claims.resource);

  // IVS now reports the broadcaster publishing on the master stage: the server sees it live.
  await fakePost("connect", { stageArn: claims.resource, userId: "broadcaster", published: true });
  await expect(studio.getByTestId("live-badge")).toHaveText("● LIVE", { timeout: 10_000 });

  // Viewer: plays what the stage delivers; frames advance; counted.
  const [viewerContext, viewerFetches] = await ivsContext(browser);
  const viewer = await open(viewerContext, `${base}/`);
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 15_000 });
  await expect.poll(() => decodedFrames(viewer), { timeout: 10_000 }).toBeGreaterThan(0);
  const before = await decodedFrames(viewer);
  await viewer.waitForTimeout(1000);
  expect(await decodedFrames(viewer), "video frames advance").toBeGreaterThan(before + 5);
  expect(viewerFetches()).toBe(1);
  const viewerCalls = await stubCalls(viewer);
  expect(viewerCalls.find((c: any) => c.op === "subscribe").subscribe).toBe("audio_video");
  const viewerClaims = claimsOf(viewerCalls.find((c: any) => c.op === "new").token);
  expect(viewerClaims.capabilities).toEqual({ allow_publish: false, allow_subscribe: true });
  await expect(viewer.getByTestId("viewer-count")).toHaveText("1 watching");
  await expect(studio.getByTestId("viewer-count")).toHaveText("1 watching");

  // Stop: the SDK leaves the stage; once IVS sees the publisher gone, viewers turn offline.
  await studio.getByTestId("stop").click();
  await expect.poll(async () => (await stubCalls(studio)).some((c: any) => c.op === "leave")).toBe(true);
  await fakePost("disconnect", { stageArn: claims.resource });
  await expect(viewer.locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 5_000 });
  await expect(viewer.getByTestId("live-badge")).toHaveText("OFFLINE", { timeout: 5_000 });
});

import { test, expect, type Page } from "@playwright/test";
import { readFileSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { closeContexts, newPage, decodedFrames } from "./pages";

test.afterEach(closeContexts);

// The server's API key: generated on first start into the data dir (or set by the environment).
function apiKey(): string {
  if (process.env.API_SECRET_KEY) return process.env.API_SECRET_KEY;
  const dir = process.env.APP_DATA_DIR ?? join("..", "data");
  return readFileSync(join(dir, "api-key"), "utf8").trim();
}

async function expectPlaying(page: Page) {
  await expect(page.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 20_000 });
  await expect.poll(() => decodedFrames(page), { timeout: 10_000 }).toBeGreaterThan(0);
  const before = await decodedFrames(page);
  await page.waitForTimeout(1000);
  expect(await decodedFrames(page), "video frames advance").toBeGreaterThan(before + 5);
}

/** Peak level of the received audio over ~3 s, through Web Audio. */
const audioPeak = (page: Page) =>
  page.evaluate(async () => {
    const v = document.querySelector('[data-testid="video"]') as HTMLVideoElement;
    const stream = v.srcObject as MediaStream;
    const live = stream.getAudioTracks().filter((t) => t.readyState === "live").length;
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    let peak = 0;
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatTimeDomainData(buf);
      for (const x of buf) peak = Math.max(peak, Math.abs(x));
    }
    await ctx.close();
    return { live, peak };
  });

async function totalViewers(page: Page): Promise<number> {
  const r = await page.request.get("/api/stats", { headers: { "x-api-key": apiKey() } });
  return (await r.json()).data.totalViewers;
}

test("go live from the browser, watch from others, counts follow, stop turns viewers offline", async ({ browser }) => {
  test.setTimeout(180_000);

  // Broadcaster: sign in, preview, go live.
  const studio = await newPage(browser, "/broadcast");
  await studio.getByTestId("api-key").fill(apiKey());
  await studio.getByTestId("sign-in").click();
  await expect(studio.getByTestId("go-live")).toBeVisible();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "preview", { timeout: 15_000 });
  await expect(studio.getByTestId("camera").locator("option")).not.toHaveCount(0);
  await expect(studio.getByTestId("obs-server")).toHaveValue(/\/whip$/);
  await studio.getByTestId("go-live").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
  await expect(studio.getByTestId("live-badge")).toHaveText("● LIVE", { timeout: 10_000 });

  // Viewer A: navigation → first decoded frame. On the local backend the page plays over WHEP
  // and never fetches the IVS Web Broadcast SDK.
  const aContext = await browser.newContext();
  let sdkFetches = 0;
  await aContext.route(/amazon-ivs-web-broadcast/, (route) => {
    sdkFetches++;
    return route.abort();
  });
  // The page notes when it hydrated and each player state it went through (page time, ms).
  await aContext.addInitScript(() => {
    const marks: string[] = [];
    (window as unknown as { __marks: string[] }).__marks = marks;
    new MutationObserver(() => {
      const player = document.querySelector("#player");
      const state = player?.getAttribute("data-state");
      if (state && marks[marks.length - 1]?.split(" ")[0] !== state) marks.push(`${state} ${Math.round(performance.now())}`);
      if (!marks.some((m) => m.startsWith("hydrated")) && document.querySelector('[data-hydrated="true"]')) {
        marks.push(`hydrated ${Math.round(performance.now())}`);
      }
    }).observe(document, { subtree: true, attributes: true, childList: true });
  });
  const a = await aContext.newPage();
  const navigated = Date.now();
  await a.goto("/");
  await expect.poll(() => decodedFrames(a), { timeout: 20_000, intervals: [20] }).toBeGreaterThan(0);
  const firstFrameMs = Date.now() - navigated;
  // Where that time went, from the page's own navigation timing (no polling in between).
  const nav = await a.evaluate(() => {
    const n = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
    const marks = (window as unknown as { __marks: string[] }).__marks.join(", ");
    const calls = (performance.getEntriesByType("resource") as PerformanceResourceTiming[])
      .filter((r) => /join_stream|whep|\.wasm/.test(r.name))
      .map((r) => `${r.name.split("/").pop()!.slice(0, 12)} ${Math.round(r.startTime)}→${Math.round(r.responseEnd)}`)
      .join(", ");
    return `response ${Math.round(n.responseEnd)}, load ${Math.round(n.loadEventEnd)}, ${marks}; ${calls}`;
  });
  await expectPlaying(a);
  const audio = await audioPeak(a);
  expect(audio.live, "an audio track is live").toBeGreaterThan(0);
  expect(audio.peak, "the audio carries sound").toBeGreaterThan(0.001);
  await expect(a.getByTestId("viewer-count")).toHaveText("1 watching");
  // A's viewer is the one the server minted: a signed HttpOnly cookie the page's script never sees.
  const minted = (await aContext.cookies()).find((c) => c.name === "livestage_viewer");
  expect(minted?.httpOnly, "the viewer cookie is HttpOnly").toBe(true);
  expect(minted?.value).toMatch(/^viewer-[0-9a-z]+\.[0-9a-f]{64}$/);
  expect(await a.evaluate(() => document.cookie)).not.toContain("livestage_viewer");

  // Viewer B joins: 2 everywhere.
  const b = await newPage(browser, "/");
  await expectPlaying(b);
  await expect(a.getByTestId("viewer-count")).toHaveText("2 watching");
  await expect(b.getByTestId("viewer-count")).toHaveText("2 watching");
  await expect(studio.getByTestId("viewer-count")).toHaveText("2 watching");
  const dash = await newPage(browser, "/dashboard");
  await expect(dash.getByTestId("dash-viewers")).toHaveText("2");
  await expect(dash.getByTestId("dash-publisher")).toHaveText("Live");
  await expect(dash.getByTestId("dash-stages")).toHaveText(/^[1-9]\d*$/);
  await expect(dash.getByTestId("stage-viewers").first()).toHaveText("2");

  // Screenshots while live.
  for (const [name, page] of [["viewer", a], ["broadcast", studio], ["dashboard", dash]] as const) {
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.screenshot({ path: `screenshots/${name}-desktop.png`, fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: `screenshots/${name}-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
  }

  // B leaves: back to 1.
  await b.goto("about:blank");
  await expect(a.getByTestId("viewer-count")).toHaveText("1 watching", { timeout: 10_000 });
  await expect(dash.getByTestId("dash-viewers")).toHaveText("1");

  // Reloading A does not double-count.
  await a.reload();
  await expectPlaying(a);
  await expect(a.getByTestId("viewer-count")).toHaveText("1 watching");
  for (let i = 0; i < 5; i++) {
    expect(await totalViewers(a)).toBe(1);
    await a.waitForTimeout(300);
  }

  // Stop: every viewer is offline within 5 s.
  await studio.getByTestId("stop").click();
  const stopped = Date.now();
  await expect(a.locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 5_000 });
  await expect(a.getByTestId("live-badge")).toHaveText("OFFLINE", { timeout: 5_000 });
  await expect(dash.getByTestId("dash-publisher")).toHaveText("Offline", { timeout: 5_000 });
  const offlineMs = Date.now() - stopped;

  // Live again: the waiting viewer plays again on its own.
  await studio.getByTestId("go-live").click();
  await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
  await expectPlaying(a);
  await expect(dash.getByTestId("dash-publisher")).toHaveText("Live", { timeout: 5_000 });
  await studio.getByTestId("stop").click();
  await expect(a.locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 5_000 });

  expect(sdkFetches, "the IVS SDK is not fetched on the local backend").toBe(0);
  console.log(`[measure] navigation to first video frame: ${firstFrameMs} ms (target <= 1500; page ${nav} ms)`);
  console.log(`[measure] stop to viewer offline: ${offlineMs} ms (target <= 5000)`);
  expect(firstFrameMs, `navigation to first video frame (${nav})`).toBeLessThanOrEqual(1500);
  expect(offlineMs, "stop to viewer offline").toBeLessThanOrEqual(5000);
});

// The budget for everything the pages hydrate: the watch page, the studio, the dashboard, the
// channel directory and channel administration. What a viewer waits for is held by the
// first-frame target above.
const BUNDLE_BUDGET_KIB = 330;

test("WASM bundle size", async () => {
  const path = join("..", "target", "site", "pkg", "livestage.wasm");
  expect(existsSync(path), `${path} is built`).toBe(true);
  const raw = readFileSync(path);
  const gz = gzipSync(raw, { level: 9 });
  console.log(`[measure] WASM bundle: ${(raw.length / 1024).toFixed(1)} KiB raw, ${(gz.length / 1024).toFixed(1)} KiB gzip (target <= ${BUNDLE_BUDGET_KIB} KiB gzip)`);
  expect(gz.length, `the bundle stays within ${BUNDLE_BUDGET_KIB} KiB gzip`).toBeLessThanOrEqual(BUNDLE_BUDGET_KIB * 1024);
});

import { test, expect } from "@playwright/test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { closeContexts, newPage, decodedFrames } from "./pages";

test.afterEach(closeContexts);

function apiKey(): string {
  if (process.env.API_SECRET_KEY) return process.env.API_SECRET_KEY;
  const dir = process.env.APP_DATA_DIR ?? join("..", "data");
  return readFileSync(join(dir, "api-key"), "utf8").trim();
}

test("a channel goes live from its own studio and plays on its own page only", async ({ browser, request }) => {
  test.setTimeout(120_000);
  const headers = { "x-api-key": apiKey() };
  const name = `e2e-${Date.now().toString(36)}`;
  const created = await request.post("/api/channels", { headers, data: { name, title: "End to end" } });
  expect(created.status()).toBe(201);
  const body = await created.json();
  expect(body.data.channel.whipEndpoint).toMatch(new RegExp(`/whip/c/${name}$`));
  const streamKey: string = body.data.streamKey;

  try {
    // The channel's broadcaster signs in with its stream key (no API key) and the studio
    // publishes on the channel.
    const studio = await newPage(browser, `/c/${name}/broadcast`);
    await studio.getByTestId("api-key").fill(streamKey);
    await studio.getByTestId("sign-in").click();
    await expect(studio.getByTestId("studio-channel")).toHaveText(name);
    await expect(studio.getByTestId("obs-stream-key-server")).toHaveValue(new RegExp(`/whip/c/${name}$`));
    // That key opens this channel's studio only.
    const elsewhere = await studio.context().newPage();
    await elsewhere.goto("/broadcast");
    await expect(elsewhere.locator('[data-hydrated="true"]').first()).toBeVisible();
    await expect(elsewhere.getByTestId("sign-in")).toBeVisible();
    await elsewhere.getByTestId("api-key").fill(streamKey);
    await elsewhere.getByTestId("sign-in").click();
    await expect(elsewhere.getByTestId("sign-in-error")).toContainText("not valid");
    await elsewhere.close();
    await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "preview", { timeout: 15_000 });
    await studio.getByTestId("go-live").click();
    await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
    await expect(studio.getByTestId("live-badge")).toHaveText("● LIVE", { timeout: 10_000 });

    // Its page plays it and counts its viewer.
    const viewer = await newPage(browser, `/c/${name}`);
    await expect(viewer.locator("#viewer")).toHaveAttribute("data-channel", name);
    await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 20_000 });
    await expect.poll(() => decodedFrames(viewer), { timeout: 10_000 }).toBeGreaterThan(0);
    await expect(viewer.getByTestId("viewer-count")).toHaveText("1 watching");
    await expect(studio.getByTestId("viewer-count")).toHaveText("1 watching");

    // The default channel's page knows nothing of it: offline, nobody counted.
    const other = await newPage(browser, "/");
    await expect(other.locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 10_000 });
    await expect(other.getByTestId("live-badge")).toHaveText("OFFLINE");
    const stats = await (await request.get(`/api/stats?channel=${name}`, { headers })).json();
    expect(stats.data.totalViewers).toBe(1);
    const defaults = await (await request.get("/api/stats", { headers })).json();
    expect(defaults.data.isPublisherLive).toBe(false);

    // Stop: the channel's viewer goes offline.
    await studio.getByTestId("stop").click();
    await expect(viewer.locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 5_000 });
    await expect(viewer.getByTestId("live-badge")).toHaveText("OFFLINE", { timeout: 5_000 });
  } finally {
    await closeContexts({ browser });
    // Bounded: the channel is deleted once its publisher is reported gone.
    for (let i = 0; i < 50; i++) {
      const r = await request.delete(`/api/channels/${name}`, { headers });
      if (r.status() === 200) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
});

test("two channels live at once: each page plays its own, the directory counts both, stopping one leaves the other", async ({
  browser,
  request,
}) => {
  test.setTimeout(180_000);
  const headers = { "x-api-key": apiKey() };
  const stamp = Date.now().toString(36);
  const names = [`e2e-a-${stamp}`, `e2e-b-${stamp}`];
  for (const name of names) {
    const created = await request.post("/api/channels", { headers, data: { name, title: `Title ${name}` } });
    expect(created.status()).toBe(201);
  }
  try {
    // Two studios, each on its channel.
    const studios = [];
    for (const name of names) {
      const studio = await newPage(browser, `/c/${name}/broadcast`);
      await studio.getByTestId("api-key").fill(apiKey());
      await studio.getByTestId("sign-in").click();
      await expect(studio.getByTestId("studio-channel")).toHaveText(name);
      await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "preview", { timeout: 15_000 });
      await studio.getByTestId("go-live").click();
      await expect(studio.getByTestId("publish-state")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
      studios.push(studio);
    }

    // A viewer on each channel's page plays that channel.
    const viewers = [];
    for (const name of names) {
      const viewer = await newPage(browser, `/c/${name}`);
      await expect(viewer.locator("#viewer")).toHaveAttribute("data-channel", name);
      await expect(viewer.locator("#player")).toHaveAttribute("data-state", "playing", { timeout: 20_000 });
      await expect.poll(() => decodedFrames(viewer), { timeout: 10_000 }).toBeGreaterThan(0);
      await expect(viewer.getByTestId("viewer-count")).toHaveText("1 watching");
      viewers.push(viewer);
    }

    // The directory on / shows both live, each with its one viewer, live channels first.
    const home = await newPage(browser, "/");
    for (const name of names) {
      const card = home.locator(`[data-testid="channel-card"][data-channel="${name}"]`);
      await expect(card).toHaveAttribute("data-live", "true", { timeout: 10_000 });
      await expect(card.getByTestId("channel-viewers")).toHaveText("1 watching", { timeout: 10_000 });
      await expect(card).toContainText(`Title ${name}`);
    }
    const order = await home.getByTestId("channel-card").evaluateAll((cards) =>
      cards.map((c) => c.getAttribute("data-live")),
    );
    expect(order.indexOf("false") === -1 || order.lastIndexOf("true") < order.indexOf("false")).toBe(true);

    // Stopping the first leaves the second playing: its frames keep coming.
    await studios[0].getByTestId("stop").click();
    await expect(viewers[0].locator("#player")).toHaveAttribute("data-state", "offline", { timeout: 5_000 });
    const before = await decodedFrames(viewers[1]);
    await expect.poll(() => decodedFrames(viewers[1]), { timeout: 5_000 }).toBeGreaterThan(before + 10);
    await expect(viewers[1].locator("#player")).toHaveAttribute("data-state", "playing");
    const first = home.locator(`[data-testid="channel-card"][data-channel="${names[0]}"]`);
    await expect(first).toHaveAttribute("data-live", "false", { timeout: 5_000 });
    await expect(home.locator(`[data-testid="channel-card"][data-channel="${names[1]}"]`)).toHaveAttribute("data-live", "true");
    await studios[1].getByTestId("stop").click();
  } finally {
    await closeContexts({ browser });
    for (const name of names) {
      for (let i = 0; i < 50; i++) {
        const r = await request.delete(`/api/channels/${name}`, { headers });
        if (r.status() === 200 || r.status() === 404) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }
});

test("the dashboard creates channels and rotates their keys for an API-key session only", async ({ browser, request }) => {
  test.setTimeout(60_000);
  const headers = { "x-api-key": apiKey() };
  const name = `e2e-d-${Date.now().toString(36)}`;
  try {
    // Without a session the dashboard offers no administration.
    const anonymous = await newPage(browser, "/dashboard");
    await expect(anonymous.getByTestId("channel-table")).toBeVisible();
    await expect(anonymous.getByTestId("channel-admin")).toHaveCount(0);

    const page = await newPage(browser, "/broadcast");
    await page.getByTestId("api-key").fill(apiKey());
    await page.getByTestId("sign-in").click();
    await expect(page.getByTestId("publish-state")).toBeVisible({ timeout: 15_000 });
    await page.goto("/dashboard");
    await expect(page.locator('[data-hydrated="true"]').first()).toBeVisible();
    await page.getByTestId("new-channel-name").fill(name);
    await page.getByTestId("new-channel-title").fill("Made on the dashboard");
    await page.getByTestId("create-channel").click();
    await expect(page.getByTestId("issued-stream-key")).toHaveValue(/^lsk_/, { timeout: 10_000 });
    const key = await page.getByTestId("issued-stream-key").inputValue();
    // The new channel's row appears without a reload.
    await expect(page.locator(`[data-testid="channel-row"][data-channel="${name}"]`)).toContainText("Made on the dashboard", {
      timeout: 5_000,
    });
    const listed = await (await request.get(`/api/channels/${name}`, { headers })).json();
    expect(listed.data.channel.title).toBe("Made on the dashboard");

    // Its key works for WHIP until rotated here; then only the new one does.
    const offer = "v=0\r\n";
    const before = await request.post(`/whip/c/${name}`, {
      headers: { authorization: `Bearer ${key}`, "content-type": "application/sdp" },
      data: offer,
    });
    expect(before.status()).not.toBe(401);
    await page.getByTestId("rotate-channel-name").fill(name);
    await page.getByTestId("rotate-key").click();
    await expect(page.getByTestId("issued-stream-key")).not.toHaveValue(key, { timeout: 10_000 });
    const old = await request.post(`/whip/c/${name}`, {
      headers: { authorization: `Bearer ${key}`, "content-type": "application/sdp" },
      data: offer,
    });
    expect(old.status()).toBe(401);

    // A bad name is refused with the reason.
    await page.getByTestId("new-channel-name").fill("Not A Name");
    await page.getByTestId("create-channel").click();
    await expect(page.getByTestId("channel-admin-error")).toContainText("name", { timeout: 5_000 });
  } finally {
    await closeContexts({ browser });
    await request.delete(`/api/channels/${name}`, { headers });
  }
});

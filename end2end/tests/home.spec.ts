import { test, expect, type Page } from "@playwright/test";

async function open(page: Page, path = "/") {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(path);
  await expect(page.locator('#home[data-hydrated="true"]')).toBeVisible();
  return errors;
}

test("home page hydrates and shows live totals", async ({ page }) => {
  const errors = await open(page);
  await expect(page.getByTestId("live-badge")).toHaveText("OFFLINE");
  await expect(page.getByTestId("active-stages")).toHaveText(/^[1-9]\d*$/);
  await expect(page.getByTestId("total-viewers")).toHaveText(/^\d+$/);
  expect(errors).toEqual([]);
});

test("watching while offline says so, through a server function", async ({ page }) => {
  const errors = await open(page);
  await page.getByTestId("join").click();
  await expect(page.getByTestId("join-state")).toHaveText("The broadcast is offline right now.");
  expect(errors).toEqual([]);
});

test("the viewer id is stable for a browser", async ({ page }) => {
  await open(page);
  const first = await page.evaluate(() => localStorage.getItem("livestage.viewerId"));
  await page.getByTestId("join").click();
  await expect(page.getByTestId("join-state")).not.toBeEmpty();
  const id = await page.evaluate(() => localStorage.getItem("livestage.viewerId"));
  expect(id).toMatch(/^viewer-[0-9a-f]+$/);
  await page.reload();
  await expect(page.locator('#home[data-hydrated="true"]')).toBeVisible();
  await page.getByTestId("join").click();
  await expect(page.getByTestId("join-state")).not.toBeEmpty();
  expect(await page.evaluate(() => localStorage.getItem("livestage.viewerId"))).toBe(id);
  expect(first === null || first === id).toBeTruthy();
});

test("the public API answers in the envelope", async ({ request }) => {
  const health = await request.get("/api/health");
  expect(health.status()).toBe(200);
  const body = await health.json();
  expect(body.success).toBe(true);
  expect(body.data.status).toBe("healthy");
  const denied = await request.get("/api/stats");
  expect(denied.status()).toBe(401);
  expect((await denied.json()).error.code).toBe("UNAUTHORIZED");
});

test("screenshots of the home page", async ({ page }) => {
  await open(page);
  await page.screenshot({ path: "screenshots/home-desktop.png", fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: "screenshots/home-phone.png", fullPage: true });
});

import { test, expect, type Page } from "@playwright/test";

async function open(page: Page, path = "/") {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(path);
  await expect(page.locator('[data-hydrated="true"]').first()).toBeVisible();
  return errors;
}

test("the viewer page hydrates and says the broadcast is offline", async ({ page }) => {
  const errors = await open(page);
  await expect(page.getByTestId("live-badge")).toHaveText("OFFLINE");
  await expect(page.locator("#player")).toHaveAttribute("data-state", "offline");
  await expect(page.getByTestId("player-state")).toContainText("offline");
  await expect(page.getByTestId("active-stages")).toHaveText(/^[1-9]\d*$/);
  await expect(page.getByTestId("unmute")).toBeEnabled();
  expect(errors).toEqual([]);
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
  const whip = await request.post("/whip", { data: "v=0", headers: { "content-type": "application/sdp" } });
  expect(whip.status()).toBe(401);
  expect((await whip.json()).error.code).toBe("UNAUTHORIZED");
});

test("a wrong API key does not sign in", async ({ page }) => {
  await open(page, "/broadcast");
  await page.getByTestId("api-key").fill("not-the-key");
  await page.getByTestId("sign-in").click();
  await expect(page.getByTestId("sign-in-error")).toHaveText("That API key is not valid.");
  await expect(page.getByTestId("go-live")).toHaveCount(0);
});

// Shared by the specs: opening a page the way a user lands on it, and reading what its player shows.
import { expect, type Browser, type Page } from "@playwright/test";

/** A page in a new browser context, once it has hydrated; page errors are logged. */
export async function newPage(browser: Browser, path: string, baseURL?: string): Promise<Page> {
  const page = await (await browser.newContext(baseURL ? { baseURL } : {})).newPage();
  page.on("pageerror", (e) => console.log(`[page error] ${e}`));
  await page.goto(path);
  await expect(page.locator('[data-hydrated="true"]').first()).toBeVisible();
  return page;
}

/** Video frames the player has decoded so far (0 before it has a video element). */
export const decodedFrames = (page: Page) =>
  page.evaluate(() => {
    const v = document.querySelector('[data-testid="video"]') as HTMLVideoElement | null;
    return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  });

/**
 * Closes every browser context a test opened. The browser outlives a test, so a studio or a
 * player left open would keep capturing, encoding and decoding through the tests after it.
 */
export async function closeContexts({ browser }: { browser: Browser }) {
  await Promise.all(browser.contexts().map((c) => c.close()));
}

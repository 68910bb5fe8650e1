import { expect, test as base, type Page } from "@playwright/test";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { ChatServer, RedisServer, WEB_DIR } from "./servers";

export const SCREENSHOTS = path.join(WEB_DIR, "test-results", "screenshots");

interface Fixtures {
  /** A `chatcore serve` of this test alone, on Redis, that the test may kill and restart. */
  ownServer: ChatServer;
  /** The embedded default of this test alone (SQLite and its key in a temporary data
   * directory), that the test may kill and restart on the same directory and port. */
  embeddedServer: ChatServer;
}

export const test = base.extend<Fixtures>({
  baseURL: async ({}, use) => {
    const url = process.env.CHATCORE_E2E_URL;
    if (!url) throw new Error("CHATCORE_E2E_URL is not set: run through playwright.config.ts (global setup)");
    await use(url);
  },
  ownServer: async ({}, use, testInfo) => {
    const redis = await RedisServer.start();
    const server = await ChatServer.start({ redisUrl: redis.url, name: `own-${testInfo.workerIndex}-${Date.now()}` });
    try {
      await use(server);
    } finally {
      await server.stop();
      await redis.stop();
    }
  },
  embeddedServer: async ({}, use, testInfo) => {
    const server = await ChatServer.start({ embedded: true, name: `embedded-${testInfo.workerIndex}-${Date.now()}` });
    try {
      await use(server);
    } finally {
      await server.stop();
    }
  },
});

export { expect };

/** Save a screenshot under test-results/screenshots/ (light, or dark with the media emulated). */
export async function shot(page: Page, name: string, scheme: "light" | "dark" = "light"): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.emulateMedia({ colorScheme: scheme });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${scheme}.png`), fullPage: false, animations: "disabled" });
}

/** The demo model's answers end with this sentence. */
export const DEMO_END = "docs/llm.md has the details.";

/** Open the chat on a first visit: the welcome dialog, optionally with a name. */
export async function openFirstVisit(page: Page, url: string, name?: string): Promise<void> {
  await page.goto(url);
  const dialog = page.getByRole("dialog", { name: "Welcome to chatcore" });
  await expect(dialog).toBeVisible();
  await expect(dialog.getByTestId("welcome-model")).not.toHaveText("connecting…");
  if (name) await dialog.getByLabel(/call you/).fill(name);
  await dialog.getByRole("button", { name: "Start chatting" }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
}

export async function sendMessage(page: Page, text: string): Promise<void> {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
}

export function lastAssistant(page: Page) {
  return page.locator('[data-testid="message"][data-role="assistant"]').last();
}

export function streaming(page: Page) {
  return page.getByTestId("streaming-reply");
}

/** Count non-overlapping occurrences (a duplicated resume would double them). */
export function occurrences(text: string, part: string): number {
  return text.split(part).length - 1;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".json": "application/json",
  ".woff2": "font/woff2",
};

/**
 * Serve the built client from apps/web/out inside the browser (as a CDN or the HTTP cache
 * would) so the page still loads while the API server is down; `/api` and `/ws` are untouched.
 */
export async function serveClientFromDisk(page: Page, origin: string): Promise<void> {
  const out = path.join(WEB_DIR, "out");
  await page.route(`${origin}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname.startsWith("/api/") || url.pathname === "/ws") {
      await route.continue();
      return;
    }
    let file = path.join(out, decodeURIComponent(url.pathname));
    if (url.pathname === "/" || url.pathname.endsWith("/")) file = path.join(file, "index.html");
    if (!file.startsWith(out) || !existsSync(file)) {
      await route.fulfill({ status: 404, body: "not found" });
      return;
    }
    await route.fulfill({
      status: 200,
      body: readFileSync(file),
      contentType: CONTENT_TYPES[path.extname(file)] ?? "application/octet-stream",
    });
  });
}

export function userMessages(page: Page) {
  return page.locator('[data-testid="message"][data-role="user"]');
}

/** The reply of the conversation shown has finished (the demo's last sentence is there). */
export async function replyDone(page: Page): Promise<void> {
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await expect(streaming(page)).toHaveCount(0);
}

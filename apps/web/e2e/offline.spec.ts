import { LAUNCH } from "../playwright.config";
import { DEMO_END, expect, lastAssistant, openFirstVisit, sendMessage, serveClientFromDisk, shot, test } from "./support/fixtures";

// The reload below gets the page from disk (the API server is down). A page fulfilled by the
// test rather than by a loopback server counts as a public page for Chromium's Local Network
// Access checks, which would then block its WebSocket to 127.0.0.1; this file turns them off.
test.use({ launchOptions: { ...LAUNCH, args: [...LAUNCH.args, "--disable-features=LocalNetworkAccessChecks"] } });

test("offline send: the message waits as pending, survives a reload, and is delivered when the server is back", async ({ page, ownServer }) => {
  await openFirstVisit(page, ownServer.url);
  await sendMessage(page, "Hello before the outage");
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });

  await ownServer.kill();
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "reconnecting");
  await sendMessage(page, "Sent while the server is down");
  const pending = page.getByTestId("pending-message");
  await expect(pending).toContainText("Sent while the server is down");
  await expect(pending).toContainText("Pending");
  await shot(page, "11-pending");

  // Nothing typed is lost by a reload, even with the server down (the page itself comes from
  // disk here, as it would from a CDN or the browser's cache).
  await serveClientFromDisk(page, ownServer.url);
  await page.reload();
  await expect(page.getByTestId("pending-message")).toContainText("Sent while the server is down");
  await expect(page.locator('[data-testid="message"][data-role="user"]')).toContainText("Hello before the outage");
  await page.unrouteAll();

  await ownServer.restart();
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected", { timeout: 40_000 });
  await expect(page.getByTestId("pending-message")).toHaveCount(0);
  await expect(page.locator('[data-testid="message"][data-role="user"]').last()).toContainText("Sent while the server is down");
  await expect(lastAssistant(page)).toContainText("your message number 2", { timeout: 60_000 });
  await expect(page.locator('[data-testid="message"][data-role="user"]')).toHaveCount(2);
  await shot(page, "14-delivered-after-outage");
});

import { existsSync } from "node:fs";
import path from "node:path";
import { DEMO_END, expect, lastAssistant, occurrences, openFirstVisit, sendMessage, shot, streaming, test } from "./support/fixtures";

test("the server killed and restarted mid-reply: reconnecting, then the reply completes", async ({ page, ownServer }) => {
  await openFirstVisit(page, ownServer.url);
  await sendMessage(page, "Survive a crash");
  await expect(streaming(page)).toContainText("You asked:");

  await ownServer.kill();
  const status = page.getByTestId("connection-status");
  await expect(status).toHaveAttribute("data-state", "reconnecting");
  await expect(status.getByRole("button", { name: "Retry now" })).toBeVisible();
  await shot(page, "09-reconnecting");
  await shot(page, "09-reconnecting", "dark");

  await ownServer.restart();
  await expect(status).toHaveAttribute("data-state", "connected", { timeout: 40_000 });
  const reply = lastAssistant(page);
  await expect(reply).toContainText(DEMO_END, { timeout: 90_000 });
  await expect(reply).toHaveAttribute("data-status", "complete");
  const text = await reply.innerText();
  expect(occurrences(text, "You asked:")).toBe(1);
  expect(occurrences(text, DEMO_END)).toBe(1);
  await expect(page.locator('[data-testid="message"]')).toHaveCount(2);
  await shot(page, "10-after-restart");
});

test("the embedded default (SQLite) killed mid-reply and started again on its data: the page reconnects by itself, all is there, the reply finishes", async ({
  page,
  embeddedServer,
}) => {
  await openFirstVisit(page, embeddedServer.url);
  await sendMessage(page, "Before the crash");
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await sendMessage(page, "Survive a kill -9");
  await expect(streaming(page)).toContainText("You asked:");
  const session = await page.evaluate(() => (JSON.parse(localStorage.getItem("chatcore.web.v1.chat") ?? "{}") as { session: { sessionId: string } }).session);

  await embeddedServer.kill(); // SIGKILL: no shutdown, the reply is cut off where it was
  const status = page.getByTestId("connection-status");
  await expect(status).toHaveAttribute("data-state", "reconnecting");
  expect(existsSync(path.join(embeddedServer.dataDir!, "chatcore.db"))).toBe(true);
  await embeddedServer.restart(); // the same data directory and port, no secret key given

  // Nobody presses "Retry now": the page comes back by itself, with the same session (its key
  // was kept in the data directory, so the token still holds).
  await expect(status).toHaveAttribute("data-state", "connected", { timeout: 40_000 });
  const reply = lastAssistant(page);
  await expect(reply).toContainText('You asked: "Survive a kill -9"', { timeout: 90_000 });
  await expect(reply).toContainText(DEMO_END, { timeout: 90_000 });
  await expect(reply).toHaveAttribute("data-status", "complete");
  const text = await reply.innerText();
  expect(occurrences(text, "You asked:")).toBe(1);
  expect(occurrences(text, DEMO_END)).toBe(1);
  const users = page.locator('[data-testid="message"][data-role="user"]');
  await expect(users).toHaveText([/Before the crash/, /Survive a kill -9/]);
  await expect(page.locator('[data-testid="message"]')).toHaveCount(4);
  const after = await page.evaluate(() => (JSON.parse(localStorage.getItem("chatcore.web.v1.chat") ?? "{}") as { session: { sessionId: string } }).session);
  expect(after.sessionId).toBe(session.sessionId);
  await shot(page, "17-embedded-after-kill");
});

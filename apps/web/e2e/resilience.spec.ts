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

import { DEMO_END, expect, lastAssistant, occurrences, openFirstVisit, sendMessage, shot, streaming, test } from "./support/fixtures";

test("first visit: welcome, send, a streamed reply that addresses the user by name", async ({ page, baseURL }) => {
  await page.goto(baseURL!);
  const dialog = page.getByRole("dialog", { name: "Welcome to chatcore" });
  await expect(dialog.getByTestId("welcome-model")).toHaveText(/demo/i);
  await shot(page, "01-welcome");
  await shot(page, "01-welcome", "dark");
  await openFirstVisit(page, baseURL!, "Ada");

  await sendMessage(page, "What are you, in one paragraph?");
  const user = page.locator('[data-testid="message"][data-role="user"]').last();
  await expect(user).toContainText("What are you, in one paragraph?");
  await expect(page.getByTestId("typing-indicator")).toBeVisible();
  await expect(streaming(page)).toContainText("Hi Ada!");
  await shot(page, "02-streaming");
  await expect(page.getByRole("button", { name: "Stop" })).toBeVisible();

  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await expect(page.getByTestId("typing-indicator")).toBeHidden();
  await expect(page.getByTestId("live-region")).toContainText("Assistant replied:");
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("What are you, in one paragraph?");
  await shot(page, "03-chat");
  await shot(page, "03-chat", "dark");

  await page.setViewportSize({ width: 375, height: 720 });
  await expect(page.locator("#sidebar")).toBeHidden();
  await shot(page, "04-phone");
  await shot(page, "04-phone", "dark");
  await page.getByRole("button", { name: "Chats" }).click();
  await expect(page.getByRole("navigation", { name: "Conversations" })).toBeVisible();
  await shot(page, "05-phone-conversations");
});

test("a reload mid-reply brings the history back at once and the reply completes without duplication", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Tell me about resumable streams");
  await expect(streaming(page)).toContainText("You asked:");
  const before = (await streaming(page).innerText()).length;

  await page.reload();
  // Painted from this device's storage before the server answers anything.
  await expect(page.locator('[data-testid="message"][data-role="user"]')).toContainText("Tell me about resumable streams", { timeout: 5_000 });
  await expect(page.getByRole("dialog")).toHaveCount(0);
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
  await shot(page, "06-after-reload");

  const reply = lastAssistant(page);
  await expect(reply).toContainText(DEMO_END, { timeout: 60_000 });
  const text = await reply.innerText();
  expect(text.length).toBeGreaterThan(before);
  expect(occurrences(text, "You asked:")).toBe(1);
  expect(occurrences(text, "chatcore is an event-sourced chat backend")).toBe(1);
  expect(occurrences(text, DEMO_END)).toBe(1);
  await expect(page.locator('[data-testid="message"]')).toHaveCount(2);
});

test("stop mid-reply keeps the partial text, marked as stopped", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Please write a long answer");
  await expect(streaming(page)).toContainText("You asked:");
  await page.getByRole("button", { name: "Stop" }).click();

  const reply = lastAssistant(page);
  await expect(reply).toHaveAttribute("data-status", "cancelled");
  await expect(reply).toContainText("Stopped");
  await expect(reply).toContainText("You asked:");
  expect(await reply.innerText()).not.toContain(DEMO_END);
  await expect(page.getByTestId("typing-indicator")).toBeHidden();
  await expect(page.getByRole("button", { name: "Stop" })).toHaveCount(0);
  await shot(page, "07-stopped");

  // The conversation goes on.
  await sendMessage(page, "Second question");
  await expect(lastAssistant(page)).toContainText("your message number 2", { timeout: 60_000 });
});

test("conversations: start a new one, switch back, titles from the server", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "First topic");
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  const nav = page.getByRole("navigation", { name: "Conversations" });
  await nav.getByRole("button", { name: "+ New chat" }).click();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("New chat");
  await sendMessage(page, "Second topic");
  await expect(nav.getByRole("button", { name: "Second topic", exact: true })).toBeVisible();
  await expect(page).toHaveURL(/\?c=/);
  await nav.getByRole("button", { name: "First topic", exact: true }).click();
  const users = page.locator('[data-testid="message"][data-role="user"]');
  await expect(users).toHaveCount(1);
  await expect(users).toContainText("First topic");
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await nav.getByRole("button", { name: "Second topic", exact: true }).click();
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await shot(page, "08-conversations");
});

test("keyboard only: Escape closes the welcome, Tab reaches the composer, Enter sends", async ({ page, baseURL }) => {
  await page.goto(baseURL!);
  await expect(page.getByRole("dialog")).toBeVisible();
  await expect(page.getByLabel(/call you/)).toBeFocused();
  await page.keyboard.press("Escape");
  await expect(page.getByRole("dialog")).toHaveCount(0);
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
  const box = page.getByRole("textbox", { name: "Message" });
  for (let i = 0; i < 12; i++) {
    if (await box.evaluate((el) => el === document.activeElement)) break;
    await page.keyboard.press("Tab");
  }
  await expect(box).toBeFocused();
  await page.keyboard.type("Typed with the keyboard");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  await page.keyboard.press("Enter");
  await expect(page.locator('[data-testid="message"][data-role="user"]').last()).toContainText("second line");
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  // Back to the conversation list with Shift+Tab: focus is visible on the way.
  const nav = page.getByRole("navigation", { name: "Conversations" });
  for (let i = 0; i < 12; i++) {
    if (await nav.getByRole("button", { name: "+ New chat" }).evaluate((el) => el === document.activeElement)) break;
    await page.keyboard.press("Shift+Tab");
  }
  await expect(nav.getByRole("button", { name: "+ New chat" })).toBeFocused();
  await shot(page, "12-keyboard-focus");
});

test("auto-scroll follows a streaming reply until the reader scrolls up; jump to latest brings it back", async ({ page, baseURL }) => {
  await page.setViewportSize({ width: 375, height: 640 });
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "A reply longer than the screen");
  const region = page.getByRole("region", { name: "Messages" });
  const distanceFromBottom = () => region.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  // Following: the bottom stays in view while text arrives and overflows the view.
  await expect.poll(() => region.evaluate((el) => el.scrollHeight - el.clientHeight), { timeout: 30_000 }).toBeGreaterThan(150);
  await expect(streaming(page)).toBeVisible();
  await expect.poll(distanceFromBottom).toBeLessThan(60);

  // The reader scrolls up: the view stays where they put it while the reply grows.
  await region.evaluate((el) => el.scrollTo({ top: 0 }));
  await expect(page.getByRole("button", { name: /Jump to latest/ })).toBeVisible();
  await expect(streaming(page)).toContainText("CHATCORE_LLM__MODEL", { timeout: 30_000 });
  expect(await region.evaluate((el) => el.scrollTop)).toBeLessThan(5);
  await shot(page, "13-jump-to-latest");
  await shot(page, "13-jump-to-latest", "dark");

  await page.getByRole("button", { name: /Jump to latest/ }).click();
  await expect.poll(distanceFromBottom).toBeLessThan(60);
  await expect(page.getByRole("button", { name: /Jump to latest/ })).toBeHidden();
  await expect(lastAssistant(page)).toContainText(DEMO_END, { timeout: 60_000 });
  await expect.poll(distanceFromBottom).toBeLessThan(60);
});

import { readFileSync } from "node:fs";
import type { Page } from "@playwright/test";
import {
  DEMO_END,
  expect,
  lastAssistant,
  occurrences,
  openFirstVisit,
  replyDone,
  sendMessage,
  shot,
  streaming,
  test,
  userMessages,
} from "./support/fixtures";

/** The conversation's list item (its title button) in the sidebar. */
function conversationButton(page: Page, title: string) {
  return page.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: title, exact: true });
}

async function openMenu(page: Page, title: string) {
  await page.getByRole("button", { name: `Actions for ${title}` }).click();
  const menu = page.getByRole("menu", { name: `Actions for ${title}` });
  await expect(menu).toBeVisible();
  return menu;
}

test("edit a message, get a new answer, step back to the old version and on, in light and dark", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Plan a weekend by the sea");
  await replyDone(page);

  const question = userMessages(page).first();
  await question.getByRole("button", { name: "Edit message" }).click();
  const editor = page.getByRole("textbox", { name: "Edit your message" });
  await expect(editor).toBeFocused();
  await expect(editor).toHaveValue("Plan a weekend by the sea");
  // Escape leaves it as it was, and gives the focus back to the Edit button.
  await editor.fill("Plan a weekend in the hills");
  await editor.press("Escape");
  await expect(editor).toHaveCount(0);
  await expect(question).toContainText("Plan a weekend by the sea");
  await expect(question.getByRole("button", { name: "Edit message" })).toBeFocused();

  await question.getByRole("button", { name: "Edit message" }).press("Enter");
  await page.getByRole("textbox", { name: "Edit your message" }).fill("Plan a weekend in the mountains");
  await page.getByRole("textbox", { name: "Edit your message" }).press("Control+Enter");
  await expect(userMessages(page)).toHaveCount(1);
  await expect(userMessages(page).first()).toContainText("Plan a weekend in the mountains");
  await expect(streaming(page)).toContainText('You asked: "Plan a weekend in the mountains"');
  // While the new version is being answered, nothing can be edited or switched a second time.
  await expect(userMessages(page).first().getByRole("button", { name: "Previous version of this message" })).toBeDisabled();
  await expect(userMessages(page).first().getByRole("button", { name: "Edit message" })).toBeDisabled();
  await replyDone(page);
  await expect(lastAssistant(page)).toContainText('You asked: "Plan a weekend in the mountains"');

  const switcher = userMessages(page).first().getByTestId("version-switcher");
  await expect(switcher).toHaveAttribute("data-version", "2/2");
  await shot(page, "15-version-switcher");
  await shot(page, "15-version-switcher", "dark");

  // Back to the first version: its question and its own answer come back.
  await switcher.getByRole("button", { name: "Previous version of this message" }).click();
  await expect(userMessages(page).first()).toContainText("Plan a weekend by the sea");
  await expect(lastAssistant(page)).toContainText('You asked: "Plan a weekend by the sea"');
  await expect(userMessages(page).first().getByTestId("version-switcher")).toHaveAttribute("data-version", "1/2");
  await expect(page.locator('[data-testid="message"]')).toHaveCount(2);

  // Sending goes on from the version shown: the prompt holds that path only.
  await sendMessage(page, "And for a rainy day?");
  await replyDone(page);
  await expect(lastAssistant(page)).toContainText("your message number 2");
  await page
    .getByTestId("version-switcher")
    .first()
    .getByRole("button", { name: "Next version of this message" })
    .click();
  await expect(userMessages(page)).toHaveCount(1);
  await expect(userMessages(page).first()).toContainText("Plan a weekend in the mountains");
});

test("regenerate, reload in the middle of the new answer: it resumes on its own branch", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Name a colour");
  await replyDone(page);
  await userMessages(page).first().getByRole("button", { name: "Edit message" }).click();
  await page.getByRole("textbox", { name: "Edit your message" }).fill("Name a flower");
  await page.getByRole("button", { name: "Send", exact: true }).first().click();
  await replyDone(page);

  await lastAssistant(page).getByRole("button", { name: "Regenerate reply" }).click();
  await expect(streaming(page)).toContainText('You asked: "Name a flower"');
  const before = (await streaming(page).innerText()).length;
  await page.reload();

  // The history of this device paints at once, on the edited branch, and the answer goes on.
  await expect(userMessages(page).first()).toContainText("Name a flower", { timeout: 5_000 });
  await expect(userMessages(page).first().getByTestId("version-switcher")).toHaveAttribute("data-version", "2/2");
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
  await replyDone(page);
  const reply = lastAssistant(page);
  const text = await reply.innerText();
  expect(text.length).toBeGreaterThan(before);
  expect(occurrences(text, 'You asked: "Name a flower"')).toBe(1);
  expect(occurrences(text, DEMO_END)).toBe(1);
  await expect(reply.getByTestId("version-switcher")).toHaveAttribute("data-version", "2/2");
  await expect(page.locator('[data-testid="message"]')).toHaveCount(2);

  // The first answer to the edited question is kept, as the other version.
  await reply.getByRole("button", { name: "Previous version of this reply" }).click();
  await expect(lastAssistant(page).getByTestId("version-switcher")).toHaveAttribute("data-version", "1/2");
  await expect(lastAssistant(page)).toHaveAttribute("data-status", "complete");
  await expect(lastAssistant(page)).toContainText('You asked: "Name a flower"');
});

test("a second tab follows a switch of version, a rename and a deletion", async ({ page, context, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Tea or coffee?");
  await replyDone(page);
  await lastAssistant(page).getByRole("button", { name: "Regenerate reply" }).click();
  // (Until the new answer shows, the old one is the last and complete: wait for the new one.)
  await expect(lastAssistant(page).getByTestId("version-switcher")).toHaveAttribute("data-version", "2/2");
  await replyDone(page);

  // The same session in another tab (it shares this device's storage).
  const second = await context.newPage();
  await second.goto(baseURL!);
  await expect(second.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
  await expect(lastAssistant(second).getByTestId("version-switcher")).toHaveAttribute("data-version", "2/2");

  await lastAssistant(page).getByRole("button", { name: "Previous version of this reply" }).click();
  await expect(lastAssistant(page).getByTestId("version-switcher")).toHaveAttribute("data-version", "1/2");
  await expect(lastAssistant(second).getByTestId("version-switcher")).toHaveAttribute("data-version", "1/2");

  // Rename by double-click on the title.
  await conversationButton(page, "Tea or coffee?").dblclick();
  const field = page.getByRole("textbox", { name: "New name of the conversation" });
  await expect(field).toBeFocused();
  await field.fill("Morning drinks");
  await field.press("Enter");
  await expect(conversationButton(page, "Morning drinks")).toBeFocused();
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Morning drinks");
  await expect(conversationButton(second, "Morning drinks")).toBeVisible();

  // A second conversation, then the first one deleted from the first tab's menu.
  await page.getByRole("button", { name: "+ New chat" }).click();
  await sendMessage(page, "Something else");
  await replyDone(page);
  await expect(conversationButton(second, "Something else")).toBeVisible();
  const menu = await openMenu(page, "Morning drinks");
  await expect(menu.getByRole("menuitem").first()).toBeFocused();
  await menu.getByRole("menuitem", { name: "Delete…" }).click();
  const dialog = page.getByRole("alertdialog", { name: "Delete this conversation?" });
  await expect(dialog).toContainText("Morning drinks");
  await expect(dialog.getByRole("button", { name: "Cancel" })).toBeFocused();
  await shot(page, "16-delete-conversation");
  await shot(page, "16-delete-conversation", "dark");
  // Escape keeps it; the focus returns to its menu button.
  await page.keyboard.press("Escape");
  await expect(dialog).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Actions for Morning drinks" })).toBeFocused();
  await expect(conversationButton(page, "Morning drinks")).toBeVisible();

  await (await openMenu(page, "Morning drinks")).getByRole("menuitem", { name: "Delete…" }).click();
  await page.getByRole("alertdialog").getByRole("button", { name: "Delete" }).click();
  await expect(conversationButton(page, "Morning drinks")).toHaveCount(0);
  await expect(conversationButton(second, "Morning drinks")).toHaveCount(0);
  await expect(conversationButton(page, "Something else")).toBeVisible();
  await expect(page.getByRole("alertdialog")).toHaveCount(0);
  await expect(page.getByRole("button", { name: "+ New chat" })).toBeFocused();
  await second.close();
});

test("export a conversation as Markdown and JSON (the active path, or every version)", async ({ page, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "Pack for Lisbon");
  await replyDone(page);
  await lastAssistant(page).getByRole("button", { name: "Regenerate reply" }).click();
  // (Until the new answer shows, the old one is the last and complete: wait for the new one.)
  await expect(lastAssistant(page).getByTestId("version-switcher")).toHaveAttribute("data-version", "2/2");
  await replyDone(page);

  const download = async (label: string) => {
    const menu = await openMenu(page, "Pack for Lisbon");
    const [file] = await Promise.all([page.waitForEvent("download"), menu.getByRole("menuitem", { name: label, exact: true }).click()]);
    const saved = await file.path();
    return { name: file.suggestedFilename(), text: readFileSync(saved, "utf-8") };
  };

  const markdown = await download("Export as Markdown");
  expect(markdown.name).toBe("pack-for-lisbon.md");
  expect(markdown.text).toContain("Pack for Lisbon");
  expect(occurrences(markdown.text, DEMO_END)).toBe(1); // the active path: one answer

  const json = await download("Export as JSON");
  expect(json.name).toBe("pack-for-lisbon.json");
  const doc = JSON.parse(json.text) as { format: string; title: string; tree: boolean; messages: { role: string; text: string }[] };
  expect(doc).toMatchObject({ format: "chatcore.conversation", title: "Pack for Lisbon", tree: false });
  expect(doc.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
  expect(doc.messages[0]!.text).toBe("Pack for Lisbon");

  const tree = await download("Export as JSON, every version");
  expect(tree.name).toBe("pack-for-lisbon.tree.json");
  const whole = JSON.parse(tree.text) as { tree: boolean; messages: { role: string }[] };
  expect(whole.tree).toBe(true);
  expect(whole.messages.map((m) => m.role)).toEqual(["user", "assistant", "assistant"]);
  await expect(page.getByRole("button", { name: "Actions for Pack for Lisbon" })).toBeFocused();
});

test("delete all my chats: confirmed, gone from the server, a new empty session here, the other tab told", async ({ page, context, baseURL }) => {
  await openFirstVisit(page, baseURL!);
  await sendMessage(page, "A secret plan");
  await replyDone(page);
  const old = await page.evaluate(() => JSON.parse(localStorage.getItem("chatcore.web.v1.chat") ?? "{}") as { session: { sessionId: string; token: string } });
  const second = await context.newPage();
  await second.goto(baseURL!);
  await expect(userMessages(second).first()).toContainText("A secret plan");

  await page.getByRole("button", { name: "Delete all my chats…" }).click();
  const dialog = page.getByRole("alertdialog", { name: "Delete all your chats?" });
  await expect(dialog.getByRole("button", { name: "Cancel" })).toBeFocused();
  await dialog.getByRole("button", { name: "Delete everything" }).click();

  // Here: a new, empty session, connected.
  await expect(page.getByTestId("connection-status")).toHaveAttribute("data-state", "connected");
  await expect(userMessages(page)).toHaveCount(0);
  await expect(page.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: "A secret plan" })).toHaveCount(0);
  const fresh = await page.evaluate(() => JSON.parse(localStorage.getItem("chatcore.web.v1.chat") ?? "{}") as { session: { sessionId: string } });
  expect(fresh.session.sessionId).not.toBe(old.session.sessionId);
  await sendMessage(page, "Starting over");
  await replyDone(page);

  // The old session is gone from the server.
  const gone = await page.request.get(`${baseURL}/api/sessions/${old.session.sessionId}`, {
    headers: { Authorization: `Bearer ${old.session.token}` },
  });
  expect(gone.status()).toBe(404);
  expect(((await gone.json()) as { error: { code: string } }).error.code).toBe("session_not_found");

  // The other tab was told, in words, and lost the deleted history.
  const status = second.getByTestId("connection-status");
  await expect(status).toHaveAttribute("data-state", "expired");
  await expect(status).toContainText("Your chats were deleted");
  await expect(userMessages(second)).toHaveCount(0);
  await second.close();
});

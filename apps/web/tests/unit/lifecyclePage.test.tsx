import { fireEvent, screen, within } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ev } from "./support/fakeSocket";
import { connectFresh, renderPage, serve, tick, type PageRig } from "./support/page";
import type { FakeWebSocket } from "./support/fakeSocket";

/** The conversation lifecycle in the page: edit in place, versions, regenerate, copy, rename,
 * the conversation's menu, the confirmation dialogs, and what the user is told. */

const REPLY = "Here is code:\n\n```python\nprint('hi')\n```\n";

/** c1: m1 ("Hi") answered by r1, then edited to e1 ("Hello"), answered by r2. */
function twoVersions(ws: FakeWebSocket): void {
  ws.push(ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }));
  ws.push(ev("2-1", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }));
  ws.push(ev("2-2", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: REPLY }));
  ws.push(ev("2-3", { type: "reply_completed", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo" }));
  ws.push(ev("3-0", { type: "message_edited", conversation_id: "c1", message_id: "e1", client_message_id: "k2", text: "Hello", edit_of: "m1", parent_id: null }));
  ws.push(ev("3-1", { type: "reply_started", conversation_id: "c1", reply_id: "r2", in_reply_to: "e1", model: "Demo", attempt: 1 }));
  ws.push(ev("3-2", { type: "reply_delta", conversation_id: "c1", reply_id: "r2", text: "Hello to you" }));
  ws.push(ev("3-3", { type: "reply_completed", conversation_id: "c1", reply_id: "r2", in_reply_to: "e1", model: "Demo" }));
}

async function ready(): Promise<{ rig: PageRig; ws: FakeWebSocket }> {
  const rig = renderPage();
  const ws = await connectFresh(rig);
  serve(() => twoVersions(ws));
  return { rig, ws };
}

function userRow(): HTMLElement {
  return screen.getAllByTestId("message").find((el) => el.dataset.role === "user")!;
}

function replyRow(): HTMLElement {
  return screen.getAllByTestId("message").find((el) => el.dataset.role === "assistant")!;
}

let writeText: ReturnType<typeof vi.fn>;

beforeEach(() => {
  vi.useFakeTimers();
  writeText = vi.fn(async () => {});
  Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("editing a message in place", () => {
  it("Escape leaves it as it was and gives the focus back to Edit; Ctrl+Enter sends the new version", async () => {
    const { ws } = await ready();
    fireEvent.click(within(userRow()).getByRole("button", { name: "Edit message" }));
    const editor = screen.getByRole("textbox", { name: "Edit your message" });
    expect(document.activeElement).toBe(editor);
    expect((editor as HTMLTextAreaElement).value).toBe("Hello");
    fireEvent.change(editor, { target: { value: "Hello there" } });
    fireEvent.keyDown(editor, { key: "Escape" });
    await tick();
    expect(screen.queryByRole("textbox", { name: "Edit your message" })).toBeNull();
    expect(document.activeElement).toBe(within(userRow()).getByRole("button", { name: "Edit message" }));
    expect(ws.framesOfType("edit")).toHaveLength(0);

    fireEvent.click(within(userRow()).getByRole("button", { name: "Edit message" }));
    const again = screen.getByRole("textbox", { name: "Edit your message" });
    fireEvent.change(again, { target: { value: "Hello there" } });
    fireEvent.keyDown(again, { key: "Enter" }); // Enter alone adds a line: nothing is sent
    expect(ws.framesOfType("edit")).toHaveLength(0);
    fireEvent.keyDown(again, { key: "Enter", ctrlKey: true });
    expect(ws.framesOfType("edit")).toMatchObject([{ conversation_id: "c1", message_id: "e1", text: "Hello there" }]);
    expect(screen.getByTestId("message-editor").textContent).toContain("Sending…");
  });

  it("a refused edit stays open with its text and the reason in words; Cancel drops it", async () => {
    const { ws } = await ready();
    fireEvent.click(within(userRow()).getByRole("button", { name: "Edit message" }));
    const editor = screen.getByRole("textbox", { name: "Edit your message" });
    fireEvent.change(editor, { target: { value: "Hello there" } });
    fireEvent.click(within(screen.getByTestId("message-editor")).getByRole("button", { name: "Send" }));
    const sent = ws.framesOfType("edit")[0]!;
    serve(() => ws.push({ type: "error", request_id: sent.request_id, code: "session_full", message: "full" }));
    expect(screen.getByRole("alert").textContent).toMatch(/This session is full/);
    expect((screen.getByRole("textbox", { name: "Edit your message" }) as HTMLTextAreaElement).value).toBe("Hello there");
    fireEvent.click(within(screen.getByTestId("message-editor")).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByTestId("message-editor")).toBeNull();
  });

  it("acknowledged and recorded, the new version replaces the old on the path", async () => {
    const { ws } = await ready();
    fireEvent.click(within(userRow()).getByRole("button", { name: "Edit message" }));
    fireEvent.change(screen.getByRole("textbox", { name: "Edit your message" }), { target: { value: "Good day" } });
    fireEvent.keyDown(screen.getByRole("textbox", { name: "Edit your message" }), { key: "Enter", metaKey: true });
    const sent = ws.framesOfType("edit")[0]!;
    serve(() => {
      ws.push({ type: "ack", request_id: sent.request_id, for_type: "edit", cursor: "4-0", conversation_id: "c1", client_message_id: sent.client_message_id, message_id: "e2" });
      ws.push(ev("4-0", { type: "message_edited", conversation_id: "c1", message_id: "e2", client_message_id: sent.client_message_id, text: "Good day", edit_of: "e1", parent_id: null }));
    });
    expect(screen.queryByTestId("message-editor")).toBeNull();
    expect(userRow().textContent).toContain("Good day");
    expect(within(userRow()).getByTestId("version-switcher").dataset.version).toBe("3/3");
    // The row that had the focus is gone: the focus is on the messages, not lost.
    await tick();
    expect(document.activeElement).toBe(screen.getByRole("region", { name: "Messages" }));
  });
});

describe("versions and regeneration", () => {
  it("the switcher says where a message stands, asks for select_branch, and follows the event", async () => {
    const { ws } = await ready();
    const switcher = within(userRow()).getByTestId("version-switcher");
    expect(switcher.dataset.version).toBe("2/2");
    expect(switcher.getAttribute("aria-label")).toBe("Versions of this message");
    expect((within(switcher).getByRole("button", { name: "Next version of this message" }) as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(within(switcher).getByRole("button", { name: "Previous version of this message" }));
    expect(ws.framesOfType("select_branch")).toMatchObject([{ conversation_id: "c1", message_id: "m1" }]);
    serve(() => ws.push(ev("4-0", { type: "branch_selected", conversation_id: "c1", message_id: "m1", leaf_id: "r1" })));
    expect(userRow().textContent).toContain("Hi");
    expect(within(userRow()).getByTestId("version-switcher").dataset.version).toBe("1/2");
  });

  it("regenerate asks for a new answer to the message; nothing can change while it streams", async () => {
    const { ws } = await ready();
    fireEvent.click(within(replyRow()).getByRole("button", { name: "Regenerate reply" }));
    expect(ws.framesOfType("regenerate")).toMatchObject([{ conversation_id: "c1", message_id: "e1" }]);
    serve(() => {
      ws.push(ev("4-0", { type: "reply_requested", conversation_id: "c1", in_reply_to: "e1", client_message_id: "k2" }));
      ws.push(ev("4-1", { type: "reply_started", conversation_id: "c1", reply_id: "r3", in_reply_to: "e1", model: "Demo", attempt: 1 }));
    });
    expect(screen.getAllByTestId("message")).toHaveLength(1); // the answers are versions now
    const edit = within(userRow()).getByRole("button", { name: "Edit message" }) as HTMLButtonElement;
    expect(edit.disabled).toBe(true);
    expect(edit.title).toMatch(/still answering/);
    for (const button of within(userRow()).getAllByRole("button", { name: /version of this message/ })) {
      expect((button as HTMLButtonElement).disabled).toBe(true);
    }
  });

  it("a refused regeneration is explained in words", async () => {
    const { ws } = await ready();
    fireEvent.click(within(replyRow()).getByRole("button", { name: "Regenerate reply" }));
    const sent = ws.framesOfType("regenerate")[0]!;
    serve(() => ws.push({ type: "error", request_id: sent.request_id, code: "reply_in_progress", message: "x" }));
    expect(document.querySelector(".notice")!.textContent).toMatch(/still answering in this conversation/);
  });
});

describe("copy", () => {
  it("copies a whole message, and a code block alone", async () => {
    const { ws } = await ready();
    serve(() => ws.push(ev("4-0", { type: "branch_selected", conversation_id: "c1", message_id: "m1", leaf_id: "r1" })));
    fireEvent.click(within(userRow()).getByRole("button", { name: "Copy message" }));
    await tick();
    expect(writeText).toHaveBeenLastCalledWith("Hi");
    expect(within(userRow()).getByRole("status").textContent).toBe("Copied");
    fireEvent.click(within(replyRow()).getByRole("button", { name: "Copy reply" }));
    await tick();
    expect(writeText).toHaveBeenLastCalledWith(REPLY);
    fireEvent.click(within(replyRow()).getByRole("button", { name: "Copy code" }));
    await tick();
    expect(writeText).toHaveBeenLastCalledWith("print('hi')");
  });
});

describe("the conversation list", () => {
  it("renames by double-click (Enter saves, Escape keeps the old name)", async () => {
    const { ws } = await ready();
    const nav = screen.getByRole("navigation", { name: "Conversations" });
    fireEvent.doubleClick(within(nav).getByRole("button", { name: "New chat" }));
    const field = screen.getByRole("textbox", { name: "New name of the conversation" });
    expect(document.activeElement).toBe(field);
    fireEvent.change(field, { target: { value: "Not this" } });
    fireEvent.keyDown(field, { key: "Escape" });
    expect(ws.framesOfType("rename_conversation")).toHaveLength(0);
    fireEvent.doubleClick(within(nav).getByRole("button", { name: "New chat" }));
    fireEvent.change(screen.getByRole("textbox", { name: "New name of the conversation" }), { target: { value: "Greetings" } });
    fireEvent.keyDown(screen.getByRole("textbox", { name: "New name of the conversation" }), { key: "Enter" });
    expect(ws.framesOfType("rename_conversation")).toMatchObject([{ conversation_id: "c1", title: "Greetings" }]);
    await tick();
    expect(document.activeElement).toBe(within(nav).getByRole("button", { name: "New chat" }));
  });

  it("renames from the menu, or with F2 on the conversation", async () => {
    const { ws } = await ready();
    fireEvent.click(screen.getByRole("button", { name: "Actions for New chat" }));
    fireEvent.click(screen.getByRole("menuitem", { name: "Rename" }));
    const field = screen.getByRole("textbox", { name: "New name of the conversation" });
    expect(document.activeElement).toBe(field);
    fireEvent.change(field, { target: { value: "From the menu" } });
    fireEvent.blur(field); // leaving the field saves
    expect(ws.framesOfType("rename_conversation")).toMatchObject([{ title: "From the menu" }]);
    serve(() => ws.push(ev("4-0", { type: "conversation_renamed", conversation_id: "c1", title: "From the menu" })));
    const nav = screen.getByRole("navigation", { name: "Conversations" });
    fireEvent.keyDown(within(nav).getByRole("button", { name: "From the menu" }), { key: "F2" });
    fireEvent.change(screen.getByRole("textbox", { name: "New name of the conversation" }), { target: { value: "With F2" } });
    fireEvent.keyDown(screen.getByRole("textbox", { name: "New name of the conversation" }), { key: "Enter" });
    expect(ws.framesOfType("rename_conversation").map((f) => f.title)).toEqual(["From the menu", "With F2"]);
  });

  it("the menu: arrow keys move, Escape closes it back to its button, Delete asks first", async () => {
    const { ws } = await ready();
    const button = screen.getByRole("button", { name: "Actions for New chat" });
    fireEvent.click(button);
    expect(button.getAttribute("aria-expanded")).toBe("true");
    const menu = screen.getByRole("menu", { name: "Actions for New chat" });
    const items = within(menu).getAllByRole("menuitem");
    expect(items.map((i) => i.textContent)).toEqual([
      "Rename",
      "Export as Markdown",
      "Export as JSON",
      "Export as JSON, every version",
      "Delete…",
    ]);
    expect(document.activeElement).toBe(items[0]);
    fireEvent.keyDown(menu, { key: "ArrowDown" });
    expect(document.activeElement).toBe(items[1]);
    fireEvent.keyDown(menu, { key: "ArrowUp" });
    fireEvent.keyDown(menu, { key: "ArrowUp" });
    expect(document.activeElement).toBe(items[4]);
    fireEvent.keyDown(menu, { key: "Escape" });
    await tick();
    expect(screen.queryByRole("menu")).toBeNull();
    expect(document.activeElement).toBe(button);

    fireEvent.click(button);
    fireEvent.click(screen.getByRole("menuitem", { name: "Delete…" }));
    const dialog = screen.getByRole("alertdialog", { name: "Delete this conversation?" });
    expect(dialog.getAttribute("aria-modal")).toBe("true");
    expect(document.activeElement).toBe(within(dialog).getByRole("button", { name: "Cancel" }));
    fireEvent.keyDown(dialog, { key: "Escape" });
    await tick();
    expect(screen.queryByRole("alertdialog")).toBeNull();
    expect(ws.framesOfType("delete_conversation")).toHaveLength(0);
    expect(document.activeElement).toBe(screen.getByRole("button", { name: "Actions for New chat" }));

    fireEvent.click(screen.getByRole("button", { name: "Actions for New chat" }));
    fireEvent.click(screen.getByRole("menuitem", { name: "Delete…" }));
    fireEvent.click(within(screen.getByRole("alertdialog")).getByRole("button", { name: "Delete" }));
    expect(ws.framesOfType("delete_conversation")).toMatchObject([{ conversation_id: "c1" }]);
    serve(() => ws.push(ev("4-0", { type: "conversation_deleted", conversation_id: "c1", erased: 9 })));
    expect(screen.queryAllByTestId("message")).toHaveLength(0);
    await tick();
    expect(document.activeElement).toBe(screen.getByRole("button", { name: "+ New chat" }));
  });

  it("delete all my chats asks first, then sends delete_session", async () => {
    const { ws } = await ready();
    fireEvent.click(screen.getByRole("button", { name: "Delete all my chats…" }));
    const dialog = screen.getByRole("alertdialog", { name: "Delete all your chats?" });
    fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(ws.framesOfType("delete_session")).toHaveLength(0);
    fireEvent.click(screen.getByRole("button", { name: "Delete all my chats…" }));
    fireEvent.click(within(screen.getByRole("alertdialog")).getByRole("button", { name: "Delete everything" }));
    expect(ws.framesOfType("delete_session")).toHaveLength(1);
  });

  it("renaming and deleting need the connection, and say so", async () => {
    const { rig } = await ready();
    serve(() => rig.server.last.drop(1006));
    const deleteAll = screen.getByRole("button", { name: "Delete all my chats…" }) as HTMLButtonElement;
    expect(deleteAll.disabled).toBe(true);
    expect(deleteAll.title).toMatch(/Connect to rename or delete/);
  });
});

describe("a session deleted elsewhere", () => {
  it("empties this tab and says, in words, that the chats were deleted", async () => {
    const { ws } = await ready();
    serve(() => {
      ws.push(ev("9-0", { type: "session_deleted" }));
      ws.drop(4001);
    });
    expect(screen.queryAllByTestId("message")).toHaveLength(0);
    const status = screen.getByTestId("connection-status");
    expect(status.dataset.state).toBe("expired");
    expect(status.textContent).toMatch(/Your chats were deleted/);
    expect(screen.getByTestId("composer-reason").textContent).toMatch(/chats were deleted/);
  });
});

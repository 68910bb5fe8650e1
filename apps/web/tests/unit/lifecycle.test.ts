import { describe, expect, it } from "vitest";
import { CONNECTION_LOST, reduce } from "@/lib/chatState";
import { initialState, type ChatState, type PendingCommand } from "@/lib/chatTypes";
import { exportFilename, exportPath, httpExportApi, RestError } from "@/lib/exports";
import { describeError } from "@/lib/notices";
import type { ServerFrame } from "@/lib/protocol";
import { shapingBlockedReason, versionsOnPath } from "@/lib/selectors";
import { forgetDeletedChat, saveChat, savedFromState, STORAGE_KEYS, type StorageLike } from "@/lib/storage";
import { ev, welcome } from "./support/fakeSocket";

/**
 * The state logic of the conversation lifecycle: commands and their answers, what the new
 * events do besides the fold (outbox, commands, the deleted session), the version switcher's
 * numbers, the reasons shown in words, and the export's request.
 */

const NOW = Date.parse("2025-01-01T12:00:00Z");

function fold(state: ChatState, frames: object[]): ChatState {
  return reduce(state, { type: "frames", frames: frames as ServerFrame[], now: NOW });
}

/** c1: m1 answered by r1, then m1 edited (e1) and answered by r2, then r2 regenerated (r3). */
const history = [
  welcome(),
  ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
  ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
  ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }),
  ev("2-1", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }),
  ev("2-2", { type: "reply_completed", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo" }),
  ev("3-0", { type: "message_edited", conversation_id: "c1", message_id: "e1", client_message_id: "k2", text: "Hello", edit_of: "m1", parent_id: null }),
  ev("3-1", { type: "reply_started", conversation_id: "c1", reply_id: "r2", in_reply_to: "e1", model: "Demo", attempt: 1 }),
  ev("3-2", { type: "reply_completed", conversation_id: "c1", reply_id: "r2", in_reply_to: "e1", model: "Demo" }),
  ev("4-0", { type: "reply_requested", conversation_id: "c1", in_reply_to: "e1", client_message_id: "k2" }),
  ev("4-1", { type: "reply_started", conversation_id: "c1", reply_id: "r3", in_reply_to: "e1", model: "Demo", attempt: 1 }),
  ev("4-2", { type: "reply_completed", conversation_id: "c1", reply_id: "r3", in_reply_to: "e1", model: "Demo" }),
  { type: "caught_up", cursor: "4-2" },
];

function connected(): ChatState {
  const state = fold(reduce(initialState, { type: "restored", saved: null, outbox: [], welcomeSeen: true }), history);
  return reduce(state, { type: "connection", status: { kind: "open" } });
}

function command(overrides: Partial<PendingCommand>): PendingCommand {
  return {
    requestId: "q1",
    type: "edit",
    conversationId: "c1",
    messageId: "e1",
    text: "Hello again",
    clientMessageId: "k9",
    error: null,
    ...overrides,
  };
}

describe("the versions of the messages on the active path", () => {
  it("numbers each message among its siblings, in recorded order, with its neighbours", () => {
    const c1 = connected().conversations.c1!;
    expect(c1.messages.map((m) => m.id)).toEqual(["e1", "r3"]);
    const versions = versionsOnPath(c1);
    expect(versions.get("e1")).toEqual({ index: 2, count: 2, previous: "m1", next: null });
    expect(versions.get("r3")).toEqual({ index: 2, count: 2, previous: "r2", next: null });
  });

  it("follows a switch: the first version shows 1 / 2 with the second as next", () => {
    const state = fold(connected(), [ev("5-0", { type: "branch_selected", conversation_id: "c1", message_id: "m1", leaf_id: "r1" })]);
    const c1 = state.conversations.c1!;
    expect(c1.messages.map((m) => m.id)).toEqual(["m1", "r1"]);
    const versions = versionsOnPath(c1);
    expect(versions.get("m1")).toEqual({ index: 1, count: 2, previous: null, next: "e1" });
    expect(versions.has("r1")).toBe(false); // r1 is m1's only answer
  });

  it("has nothing for a conversation without other versions", () => {
    const state = fold(reduce(initialState, { type: "restored", saved: null, outbox: [], welcomeSeen: true }), history.slice(0, 6));
    expect(versionsOnPath(state.conversations.c1!).size).toBe(0);
  });
});

describe("when a conversation's path can change", () => {
  it("not while it answers, nor while a change is unconfirmed, nor without a connection", () => {
    const state = connected();
    expect(shapingBlockedReason(state, state.conversations.c1!)).toBeNull();

    const answering = fold(state, [ev("5-0", { type: "reply_requested", conversation_id: "c1", in_reply_to: "e1", client_message_id: "k2" })]);
    expect(shapingBlockedReason(answering, answering.conversations.c1!)).toMatch(/still answering/);

    const waiting = reduce(state, { type: "command_sent", command: command({}) });
    expect(shapingBlockedReason(waiting, waiting.conversations.c1!)).toMatch(/Waiting for the server/);
    // A refused command does not block the next try; a rename never blocks.
    const refused = reduce(state, { type: "command_sent", command: command({ error: { code: "conflict", message: "x" } }) });
    expect(shapingBlockedReason(refused, refused.conversations.c1!)).toBeNull();
    const renaming = reduce(state, { type: "command_sent", command: command({ type: "rename_conversation", messageId: null }) });
    expect(shapingBlockedReason(renaming, renaming.conversations.c1!)).toBeNull();

    const offline = reduce(state, { type: "connection", status: { kind: "reconnecting", attempt: 1, retryAt: 0, reason: "x" } });
    expect(shapingBlockedReason(offline, offline.conversations.c1!)).toMatch(/Not connected/);
  });
});

describe("commands and their answers", () => {
  it("an ack takes the command off the list", () => {
    const sent = reduce(connected(), { type: "command_sent", command: command({ type: "select_branch", messageId: "m1" }) });
    const acked = fold(sent, [{ type: "ack", request_id: "q1", for_type: "select_branch", cursor: "5-0" }]);
    expect(acked.commands).toEqual([]);
  });

  it("a refused edit keeps its text and says why in words; other refusals become a notice", () => {
    const edit = fold(reduce(connected(), { type: "command_sent", command: command({}) }), [
      { type: "error", request_id: "q1", code: "reply_in_progress", message: "a reply is in progress" },
    ]);
    expect(edit.commands).toEqual([
      command({ error: { code: "reply_in_progress", message: describeError("reply_in_progress") } }),
    ]);
    expect(edit.commands[0]!.error!.message).toMatch(/still answering/);
    expect(edit.notice).toBeNull();

    const regenerate = fold(reduce(connected(), { type: "command_sent", command: command({ type: "regenerate", text: null }) }), [
      { type: "error", request_id: "q1", code: "session_full", message: "the session is full" },
    ]);
    expect(regenerate.commands).toEqual([]);
    expect(regenerate.notice?.text).toMatch(/This session is full: delete a conversation/);

    const limited = fold(reduce(connected(), { type: "command_sent", command: command({ type: "regenerate", text: null }) }), [
      { type: "error", request_id: "q1", code: "rate_limited", message: "slow down", retry_after: 4.2 },
    ]);
    expect(limited.notice?.text).toBe("Too many requests in a short time: try again in 5 s.");
  });

  it("an unknown code shows the server's message; a missing one, the code", () => {
    expect(describeError("brand_new_code", "Something new happened.")).toBe("Something new happened.");
    expect(describeError("brand_new_code", "")).toBe("The server refused the request (brand_new_code).");
    expect(describeError("unknown_message", "raw")).toBe("That message is no longer in this conversation.");
  });

  it("a lost connection keeps an unanswered edit, marked to send again, and forgets the others", () => {
    let state = reduce(connected(), { type: "command_sent", command: command({}) });
    state = reduce(state, { type: "command_sent", command: command({ requestId: "q2", type: "select_branch", text: null, clientMessageId: null }) });
    state = reduce(state, { type: "connection", status: { kind: "reconnecting", attempt: 1, retryAt: 0, reason: "x" } });
    expect(state.commands).toEqual([command({ error: { code: "connection_lost", message: CONNECTION_LOST } })]);
  });

  it("an edit whose event arrives (after a reconnect, or before its ack) is done", () => {
    const state = reduce(connected(), { type: "command_sent", command: command({ error: { code: "connection_lost", message: CONNECTION_LOST } }) });
    const recorded = fold(state, [
      ev("5-0", { type: "message_edited", conversation_id: "c1", message_id: "e2", client_message_id: "k9", text: "Hello again", edit_of: "e1", parent_id: null }),
    ]);
    expect(recorded.commands).toEqual([]);
    expect(recorded.conversations.c1!.messages.map((m) => m.id)).toEqual(["e2"]);
  });

  it("a snapshot drops commands about conversations that are gone and edits it already holds", () => {
    let state = reduce(connected(), { type: "command_sent", command: command({ conversationId: "c9" }) });
    state = reduce(state, { type: "command_sent", command: command({ requestId: "q2", clientMessageId: "k2" }) }); // e1's id: recorded
    state = reduce(state, { type: "command_sent", command: command({ requestId: "q3", clientMessageId: "k7" }) });
    const snapshot = {
      type: "snapshot",
      cursor: "4-2",
      profile: { display_name: null, language: null },
      conversations: [{ conversation_id: "c1", title: "Hi", started_at: "2025-01-01T12:00:00Z", messages: [], branches: [
        { message_id: "e1", role: "user", text: "Hello", cursor: "3-0", at: "2025-01-01T12:00:00Z", status: "complete", client_message_id: "k2", parent_id: null },
      ], pending: null }],
    };
    expect(fold(state, [snapshot]).commands.map((c) => c.requestId)).toEqual(["q3"]);
  });
});

describe("deletions besides the fold", () => {
  it("a deleted conversation takes its unsent messages and commands with it, and another is shown", () => {
    let state = fold(connected(), [ev("5-0", { type: "conversation_started", conversation_id: "c2", title: "Other" })]);
    state = reduce(state, { type: "conversation_selected", conversationId: "c1" });
    const entry = { clientMessageId: "o1", conversationId: "c1", text: "later", createdAt: "2025-01-01T12:00:00Z", notBefore: null, error: null };
    const kept = { ...entry, clientMessageId: "o2", conversationId: "c2" };
    state = reduce(state, { type: "outbox_added", entry });
    state = reduce(state, { type: "outbox_added", entry: kept });
    state = reduce(state, { type: "command_sent", command: command({}) });
    const after = fold(state, [ev("6-0", { type: "conversation_deleted", conversation_id: "c1", erased: 9 })]);
    expect(after.order).toEqual(["c2"]);
    expect(after.conversations.c1).toBeUndefined();
    expect(after.outbox).toEqual([kept]);
    expect(after.commands).toEqual([]);
    expect(after.activeId).toBe("c2");
  });

  it("a deleted session empties the history, says so, and is never saved again", () => {
    const before = connected();
    const storage = new Map<string, string>();
    const store: StorageLike = {
      getItem: (k) => storage.get(k) ?? null,
      setItem: (k, v) => void storage.set(k, v),
      removeItem: (k) => void storage.delete(k),
    };
    saveChat(store, savedFromState(before));
    const after = fold(before, [ev("6-0", { type: "session_deleted" })]);
    expect(after.sessionDeleted).toBe(true);
    expect(after.order).toEqual([]);
    expect(after.conversations).toEqual({});

    // Another tab saved a new session meanwhile: it stays. The deleted one is forgotten.
    storage.set(STORAGE_KEYS.chat, JSON.stringify({ format: 1, session: { sessionId: "sess_new", token: "t" } }));
    forgetDeletedChat(store, "sess_abcdefghijklmnop");
    expect(storage.has(STORAGE_KEYS.chat)).toBe(true);
    saveChat(store, savedFromState(before));
    forgetDeletedChat(store, "sess_abcdefghijklmnop");
    expect(storage.has(STORAGE_KEYS.chat)).toBe(false);

    const discarded = reduce(after, { type: "session_discarded", dropOutbox: true });
    expect(discarded.sessionDeleted).toBe(false);
  });

  it("deleting all chats drops the unsent messages; an expired session moves them to the next", () => {
    const entry = { clientMessageId: "o1", conversationId: "c1", text: "later", createdAt: "2025-01-01T12:00:00Z", notBefore: null, error: null };
    const state = reduce(connected(), { type: "outbox_added", entry });
    expect(reduce(state, { type: "session_discarded", dropOutbox: true }).outbox).toEqual([]);
    expect(reduce(state, { type: "session_discarded" }).outbox).toEqual([{ ...entry, conversationId: null }]);
  });
});

describe("exports", () => {
  it("asks for the format and the tree in the query, never the token", () => {
    expect(exportPath({ sessionId: "sess_1", conversationId: "c 1", format: "markdown" })).toBe(
      "/api/sessions/sess_1/conversations/c%201/export?format=markdown&tree=false",
    );
    expect(exportPath({ sessionId: "s", conversationId: "c", format: "json" })).toMatch(/format=json&tree=false$/);
    expect(exportPath({ sessionId: "s", conversationId: "c", format: "json-tree" })).toMatch(/format=json&tree=true$/);
  });

  it("names the file after the title", () => {
    expect(exportFilename("Trip to Lisbon — day 2!", "markdown")).toBe("trip-to-lisbon-day-2.md");
    expect(exportFilename("Café crème", "json")).toBe("cafe-creme.json");
    expect(exportFilename("???", "json-tree")).toBe("conversation.tree.json");
  });

  it("sends the token as a bearer header and turns a refusal into words", async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const ok = httpExportApi(async (url, init) => {
      calls.push([String(url), init]);
      return new Response("# Title\n", { status: 200, headers: { "Content-Type": "text/markdown" } });
    });
    const file = await ok.fetch({ sessionId: "s", token: "tok", conversationId: "c", title: "Title", format: "markdown" });
    expect(file.filename).toBe("title.md");
    expect(await file.blob.text()).toBe("# Title\n");
    expect(calls[0]![0]).not.toContain("tok");
    expect(calls[0]![1]!.headers).toEqual({ Authorization: "Bearer tok" });

    const refused = httpExportApi(
      async () =>
        new Response(JSON.stringify({ error: { code: "unknown_conversation", message: "no such conversation" } }), { status: 404 }),
    );
    const failure = await refused.fetch({ sessionId: "s", token: "t", conversationId: "c", title: "T", format: "json" }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(RestError);
    expect(failure).toMatchObject({ status: 404, code: "unknown_conversation", message: "This conversation no longer exists." });
  });
});

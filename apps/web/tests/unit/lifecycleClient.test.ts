import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RestError, type ExportApi } from "@/lib/exports";
import type { Edit } from "@/lib/protocol";
import { serveFresh, rig } from "./support/clientRig";
import { ev, type FakeWebSocket } from "./support/fakeSocket";

/** The controller's lifecycle commands against a fake server, through the real socket core. */

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** c1 holds m1 ("Hi") answered by r1. */
function answered(ws: FakeWebSocket): void {
  ws.push(ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }));
  ws.push(ev("2-1", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }));
  ws.push(ev("2-2", { type: "reply_completed", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo" }));
}

function edits(ws: FakeWebSocket): Edit[] {
  return ws.framesOfType("edit");
}

describe("edit", () => {
  it("sends the new version with a client message id, and one edit at a time", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    const requestId = r.client.editMessage("c1", "m1", "Hello");
    expect(edits(ws)).toEqual([
      { type: "edit", request_id: requestId, conversation_id: "c1", message_id: "m1", client_message_id: expect.any(String), text: "Hello" },
    ]);
    // Unanswered: a second edit is not sent, and the user is told why.
    expect(r.client.editMessage("c1", "m1", "Hello again")).toBeNull();
    expect(edits(ws)).toHaveLength(1);
    expect(r.client.store.getState().notice?.text).toMatch(/Waiting for the server/);

    ws.push({ type: "ack", request_id: requestId, for_type: "edit", cursor: "3-0", conversation_id: "c1", client_message_id: edits(ws)[0]!.client_message_id, message_id: "e1" });
    expect(r.client.store.getState().commands).toEqual([]);
  });

  it("is not sent while the conversation answers (a streaming branch cannot be edited twice)", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    r.client.editMessage("c1", "m1", "Hello");
    const first = edits(ws)[0]!;
    ws.push({ type: "ack", request_id: first.request_id, for_type: "edit", cursor: "3-0", conversation_id: "c1", client_message_id: first.client_message_id, message_id: "e1" });
    ws.push(ev("3-0", { type: "message_edited", conversation_id: "c1", message_id: "e1", client_message_id: first.client_message_id, text: "Hello", edit_of: "m1", parent_id: null }));
    ws.push(ev("3-1", { type: "reply_started", conversation_id: "c1", reply_id: "r2", in_reply_to: "e1", model: "Demo", attempt: 1 }));
    expect(r.client.editMessage("c1", "e1", "Hello twice")).toBeNull();
    expect(r.client.regenerate("c1", "e1")).toBeNull();
    expect(r.client.selectVersion("c1", "m1")).toBeNull();
    expect(edits(ws)).toHaveLength(1);
    expect(ws.framesOfType("regenerate")).toHaveLength(0);
    expect(ws.framesOfType("select_branch")).toHaveLength(0);
    expect(r.client.store.getState().notice?.text).toMatch(/still answering/);
  });

  it("sent again after a lost connection, the same text keeps its client message id (recorded once)", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    r.client.editMessage("c1", "m1", "Hello");
    const first = edits(ws)[0]!;
    ws.drop(1006);
    expect(r.client.store.getState().commands[0]!.error?.code).toBe("connection_lost");
    await vi.advanceTimersByTimeAsync(1000);
    const ws2 = r.server.last;
    ws2.accept();
    ws2.push({ type: "welcome", protocol: 1, session_id: "sess_abcdefghijklmnop", token: "t1", model: "Demo", limits: { max_message_chars: 4000, max_frame_bytes: 65536, messages_per_minute: 20, idle_timeout: 90 }, resume: "events" });
    ws2.push({ type: "caught_up", cursor: "2-2" });
    r.client.editMessage("c1", "m1", "Hello");
    expect(edits(ws2)[0]!.client_message_id).toBe(first.client_message_id);
    expect(r.client.store.getState().commands).toHaveLength(1);
    // Changed text: a new version, a new id.
    ws2.push({ type: "error", request_id: edits(ws2)[0]!.request_id, code: "conflict", message: "busy" });
    r.client.editMessage("c1", "m1", "Hello, changed");
    expect(edits(ws2)[1]!.client_message_id).not.toBe(first.client_message_id);
  });

  it("refuses, with the reason, a text over the server's limit", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    expect(r.client.editMessage("c1", "m1", "x".repeat(4001))).toBeNull();
    expect(edits(ws)).toHaveLength(0);
    expect(r.client.store.getState().notice?.text).toMatch(/longer than 4000 characters/);
  });
});

describe("regenerate, switch, rename", () => {
  it("each sends its frame and waits for its answer", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    const regenerate = r.client.regenerate("c1", "m1");
    expect(ws.framesOfType("regenerate")).toEqual([{ type: "regenerate", request_id: regenerate, conversation_id: "c1", message_id: "m1" }]);
    ws.push({ type: "ack", request_id: regenerate, for_type: "regenerate", cursor: "3-0", conversation_id: "c1", message_id: "m1" });
    const select = r.client.selectVersion("c1", "r1");
    expect(ws.framesOfType("select_branch")).toEqual([{ type: "select_branch", request_id: select, conversation_id: "c1", message_id: "r1" }]);
    ws.push({ type: "ack", request_id: select, for_type: "select_branch", cursor: null, conversation_id: "c1" });

    expect(r.client.renameConversation("c1", "   ")).toBeNull();
    const rename = r.client.renameConversation("c1", "  Greetings ");
    expect(ws.framesOfType("rename_conversation")).toEqual([{ type: "rename_conversation", request_id: rename, conversation_id: "c1", title: "Greetings" }]);
    ws.push({ type: "ack", request_id: rename, for_type: "rename_conversation", cursor: "3-1", conversation_id: "c1" });
    ws.push(ev("3-1", { type: "conversation_renamed", conversation_id: "c1", title: "Greetings" }));
    expect(r.client.renameConversation("c1", "Greetings")).toBeNull(); // unchanged: nothing to send
    expect(r.client.store.getState().commands).toEqual([]);
  });

  it("nothing is sent without a connection; the user is told", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    ws.drop(1006);
    expect(r.client.renameConversation("c1", "Offline")).toBeNull();
    expect(r.client.deleteConversation("c1")).toBeNull();
    expect(r.client.store.getState().notice?.text).toMatch(/Not connected/);
  });
});

describe("deleting", () => {
  it("deleting the last conversation starts a new one to write in; sending after all are gone does too", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    r.client.deleteConversation("c1");
    expect(ws.framesOfType("delete_conversation")).toMatchObject([{ conversation_id: "c1" }]);
    const started = ws.framesOfType("start_conversation");
    expect(started).toHaveLength(1);
    expect(r.client.store.getState().activeId).toBe(started[0]!.conversation_id);

    // Another tab deleted the only conversation this one had: a message starts one first.
    const other = rig();
    const ws2 = await serveFresh(other);
    ws2.push(ev("5-0", { type: "conversation_deleted", conversation_id: "c1", erased: 2 }));
    other.client.sendMessage("Anyone there?");
    const created = ws2.framesOfType("start_conversation");
    expect(created).toHaveLength(1);
    expect(ws2.framesOfType("send")).toMatchObject([{ conversation_id: created[0]!.conversation_id, text: "Anyone there?" }]);
  });

  it("deleting the session starts a fresh one by itself when the server closes, unsent messages gone", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    r.client.deleteSession();
    expect(ws.framesOfType("delete_session")).toHaveLength(1);
    ws.drop(1006); // (a blip before the answer: the outbox entry below is typed meanwhile)
    r.client.sendMessage("typed while away");
    await vi.advanceTimersByTimeAsync(1000);
    const ws2 = r.server.last;
    ws2.accept();
    ws2.push({ type: "error", code: "session_not_found", message: "gone", request_id: null });
    await vi.advanceTimersByTimeAsync(0);
    expect(r.api.calls).toBe(2);
    const state = r.client.store.getState();
    expect(state.connection.kind).toBe("connecting");
    expect(state.outbox).toEqual([]);
    expect(state.order).toEqual([]);
  });

  it("the ack, then 4001: no expired banner, a new session", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    const request = r.client.deleteSession();
    ws.push({ type: "ack", request_id: request, for_type: "delete_session", cursor: null });
    ws.drop(4001);
    await vi.advanceTimersByTimeAsync(0);
    expect(r.api.calls).toBe(2);
    expect(r.client.store.getState().connection.kind).not.toBe("expired");
  });

  it("a refused deletion leaves the session as it is", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    answered(ws);
    const request = r.client.deleteSession();
    ws.push({ type: "error", request_id: request, code: "unavailable", message: "storage down", retry_after: 2 });
    expect(r.client.store.getState().notice?.text).toMatch(/cannot reach its storage/);
    ws.drop(4001); // later, for another reason: the usual expired state
    await vi.advanceTimersByTimeAsync(0);
    expect(r.api.calls).toBe(1);
    expect(r.client.store.getState().connection.kind).toBe("expired");
  });
});

describe("export", () => {
  it("fetches with the session's token and title; a refusal becomes a notice in words", async () => {
    const requests: unknown[] = [];
    let fail = false;
    const exports: ExportApi = {
      async fetch(request) {
        requests.push(request);
        if (fail) throw new RestError(404, "session_not_found", "The session no longer exists.");
        return { filename: "hi.md", blob: new Blob(["# Hi"]) };
      },
    };
    const r = rig({ exports });
    const ws = await serveFresh(r);
    answered(ws);
    const file = await r.client.exportConversation("c1", "markdown");
    expect(file?.filename).toBe("hi.md");
    expect(requests).toEqual([{ sessionId: "sess_abcdefghijklmnop", token: "fresh-token", conversationId: "c1", title: "New chat", format: "markdown" }]);
    fail = true;
    expect(await r.client.exportConversation("c1", "json")).toBeNull();
    expect(r.client.store.getState().notice?.text).toBe("The export failed: The session no longer exists.");
  });
});

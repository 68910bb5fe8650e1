import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HttpError } from "@/lib/chatClient";
import type { SendFrame } from "@/lib/protocol";
import { accept, opening, rig, serveFresh } from "./support/clientRig";
import { ev, type FakeWebSocket, LIMITS, welcome } from "./support/fakeSocket";

function sends(ws: FakeWebSocket): SendFrame[] {
  return ws.framesOfType("send");
}

function ack(ws: FakeWebSocket, frame: SendFrame, messageId: string, cursor: string, duplicate = false): void {
  ws.push({
    type: "ack",
    for_type: "send",
    cursor,
    conversation_id: frame.conversation_id,
    client_message_id: frame.client_message_id,
    message_id: messageId,
    duplicate,
    request_id: frame.request_id,
  });
}

function answer(ws: FakeWebSocket, frame: SendFrame, messageId: string, ms: number): void {
  ws.push(ev(`${ms}-0`, { type: "message_submitted", conversation_id: "c1", message_id: messageId, client_message_id: frame.client_message_id, text: frame.text }));
  ws.push(ev(`${ms}-1`, { type: "reply_started", conversation_id: "c1", reply_id: `r-${messageId}`, in_reply_to: messageId, model: "Demo", attempt: 1 }));
  ws.push(ev(`${ms}-2`, { type: "reply_delta", conversation_id: "c1", reply_id: `r-${messageId}`, text: `re: ${frame.text}` }));
  ws.push(ev(`${ms}-3`, { type: "reply_completed", conversation_id: "c1", reply_id: `r-${messageId}`, in_reply_to: messageId, model: "Demo" }));
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("session start", () => {
  it("creates a session when there is none, and says hello without a cursor (snapshot)", async () => {
    const r = rig();
    const ws = await accept(r);
    expect(r.api.calls).toBe(1);
    expect(ws.frames()[0]).toEqual({ type: "hello", protocol: 1, token: "t0", last_event_id: null });
  });

  it("resumes from the last applied cursor with the freshest token", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    ws.drop(1006);
    await vi.advanceTimersByTimeAsync(1000);
    r.server.last.accept();
    expect(r.server.last.frames()[0]).toEqual({ type: "hello", protocol: 1, token: "fresh-token", last_event_id: "1-1" });
    expect(r.api.calls).toBe(1);
  });

  it("treats a refused session creation as expired, a failed one as a blip", async () => {
    const refused = rig({ failCreate: new HttpError(403, "no") });
    await vi.advanceTimersByTimeAsync(0);
    expect(refused.client.store.getState().connection.kind).toBe("expired");
    const down = rig({ failCreate: new TypeError("Failed to fetch") });
    await vi.advanceTimersByTimeAsync(0);
    expect(down.client.store.getState().connection.kind).toBe("reconnecting");
  });
});

describe("the outbox", () => {
  it("keeps messages typed before the connection and sends them once caught up", async () => {
    const r = rig();
    r.client.sendMessage("typed early");
    expect(r.client.store.getState().outbox).toHaveLength(1);
    const ws = await accept(r);
    ws.push(welcome());
    expect(sends(ws)).toHaveLength(0); // not before caught up
    for (const f of opening) ws.push(f);
    ws.push({ type: "caught_up", cursor: "1-1" });
    expect(sends(ws).map((f) => [f.conversation_id, f.text])).toEqual([["c1", "typed early"]]);
  });

  it("sends one message per conversation at a time, in order, the next after the previous reply", async () => {
    const r = rig();
    r.client.sendMessage("first");
    r.client.sendMessage("second");
    const ws = await serveFresh(r);
    expect(sends(ws).map((f) => f.text)).toEqual(["first"]);
    const first = sends(ws)[0]!;
    ack(ws, first, "m1", "2-0");
    expect(r.client.store.getState().outbox.map((e) => e.text)).toEqual(["second"]);
    expect(sends(ws)).toHaveLength(1); // the reply to "first" is pending
    answer(ws, first, "m1", 2);
    expect(sends(ws).map((f) => f.text)).toEqual(["first", "second"]);
    expect(sends(ws)[1]!.client_message_id).not.toBe(first.client_message_id);
  });

  it("removes an entry only on its ack: a connection lost before the ack resends the same id", async () => {
    const r = rig();
    r.client.sendMessage("hello?");
    const ws = await serveFresh(r);
    const sent = sends(ws)[0]!;
    ws.drop(1006);
    expect(r.client.store.getState().outbox).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    const ws2 = r.server.last;
    ws2.accept();
    ws2.push(welcome({ resume: "events" }));
    ws2.push({ type: "caught_up", cursor: "1-1" });
    expect(sends(ws2)).toHaveLength(1);
    expect(sends(ws2)[0]!.client_message_id).toBe(sent.client_message_id);
    ack(ws2, sends(ws2)[0]!, "m1", "2-0", true);
    expect(r.client.store.getState().outbox).toHaveLength(0);
  });

  it("does not resend what the resumed events show as delivered", async () => {
    const r = rig();
    r.client.sendMessage("delivered, ack lost");
    const ws = await serveFresh(r);
    const sent = sends(ws)[0]!;
    ws.drop(1006);
    await vi.advanceTimersByTimeAsync(1000);
    const ws2 = r.server.last;
    ws2.accept();
    ws2.push(welcome({ resume: "events" }));
    ws2.push(ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: sent.client_message_id, text: sent.text }));
    ws2.push({ type: "caught_up", cursor: "2-0" });
    expect(sends(ws2)).toHaveLength(0);
    expect(r.client.store.getState().outbox).toHaveLength(0);
  });

  it("after reply_in_progress, waits for the terminal reply before sending again", async () => {
    const r = rig();
    r.client.sendMessage("too soon");
    const ws = await serveFresh(r);
    const sent = sends(ws)[0]!;
    ws.push({ type: "error", code: "reply_in_progress", message: "busy", request_id: sent.request_id });
    // Someone else's turn is being answered (another tab): it shows up as events.
    ws.push(ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m0", client_message_id: "other-tab", text: "x" }));
    await vi.advanceTimersByTimeAsync(5000);
    expect(sends(ws)).toHaveLength(1);
    ws.push(ev("2-1", { type: "reply_failed", conversation_id: "c1", reply_id: null, in_reply_to: "m0", code: "x", reason: "x", partial_text: "" }));
    expect(sends(ws)).toHaveLength(2);
    expect(sends(ws)[1]!.client_message_id).toBe(sent.client_message_id);
  });

  it("waits retry_after when rate limited, then sends", async () => {
    const r = rig();
    r.client.sendMessage("fast");
    const ws = await serveFresh(r);
    ws.push({ type: "error", code: "rate_limited", message: "slow down", request_id: sends(ws)[0]!.request_id, retry_after: 3 });
    await vi.advanceTimersByTimeAsync(2900);
    expect(sends(ws)).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(200);
    expect(sends(ws)).toHaveLength(2);
  });

  it("does not send a message over the server's limit; it is kept and marked", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    r.client.sendMessage("x".repeat(4001));
    expect(sends(ws)).toHaveLength(0);
    expect(r.client.store.getState().outbox[0]!.error?.code).toBe("message_too_long");
  });

  it("counts characters as the server does: max_message_chars emoji are sent", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    r.client.sendMessage("👋".repeat(LIMITS.max_message_chars)); // 8000 UTF-16 units
    expect(sends(ws)).toHaveLength(1);
    r.client.sendMessage("👋".repeat(LIMITS.max_message_chars + 1));
    answer(ws, sends(ws)[0]!, "m1", 2);
    expect(sends(ws)).toHaveLength(1);
    expect(r.client.store.getState().outbox[0]!.error).toEqual({
      code: "message_too_long",
      message: `The message is longer than ${LIMITS.max_message_chars} characters (by 1).`,
    });
  });

  it("does not send a frame over max_frame_bytes; the message is kept and marked", async () => {
    const r = rig();
    const ws = await accept(r);
    ws.push(welcome({ resume: "events", limits: { ...LIMITS, max_frame_bytes: 1024 } }));
    for (const f of opening) ws.push(f);
    ws.push({ type: "caught_up", cursor: "1-1" });
    r.client.sendMessage("€".repeat(400)); // 400 characters, 1200 bytes
    expect(sends(ws)).toHaveLength(0);
    expect(r.client.store.getState().outbox[0]).toMatchObject({ text: "€".repeat(400), error: { code: "frame_too_big" } });
  });

  it("makes at most messages_per_minute sends in any minute; the next waits for the window", async () => {
    const r = rig();
    const ws = await accept(r);
    ws.push(welcome({ resume: "events", limits: { ...LIMITS, messages_per_minute: 2 } }));
    for (const f of opening) ws.push(f);
    ws.push({ type: "caught_up", cursor: "1-1" });
    ws.autoPong = true;
    const start = Date.now();
    r.client.sendMessage("one");
    answer(ws, sends(ws)[0]!, "m1", 2);
    await vi.advanceTimersByTimeAsync(10_000);
    r.client.sendMessage("two");
    answer(ws, sends(ws)[1]!, "m2", 3);
    r.client.sendMessage("three");
    expect(sends(ws).map((f) => f.text)).toEqual(["one", "two"]);
    await vi.advanceTimersByTimeAsync(start + 60_000 - Date.now() - 1);
    expect(sends(ws)).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(sends(ws).map((f) => f.text)).toEqual(["one", "two", "three"]);
    expect(ws.sentAt[ws.sent.findIndex((t) => t.includes('"three"'))]! - start).toBe(60_000);
  });
});

describe("commands", () => {
  it("stop sends cancel for the active conversation while a reply is pending", async () => {
    const r = rig();
    r.client.sendMessage("long story");
    const ws = await serveFresh(r);
    const sent = sends(ws)[0]!;
    ack(ws, sent, "m1", "2-0");
    expect(r.client.cancelReply()).toBe(true);
    expect(ws.framesOfType("cancel")).toMatchObject([{ type: "cancel", conversation_id: "c1" }]);
  });

  it("a new conversation is started on the server and shown at once", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    const id = r.client.startConversation();
    expect(ws.framesOfType("start_conversation")).toMatchObject([{ conversation_id: id }]);
    expect(r.client.store.getState().activeId).toBe(id);
    ws.push(ev("2-0", { type: "conversation_started", conversation_id: id, title: "New chat" }));
    expect(r.client.store.getState().order).toEqual(["c1", id]);
  });

  it("a new conversation cannot be started while disconnected", async () => {
    const r = rig();
    expect(r.client.startConversation()).toBeNull();
  });

  it("start a new session after expiry: unsent messages go to the new session", async () => {
    const r = rig();
    const ws = await serveFresh(r);
    r.network.online = true;
    ws.drop(4001);
    r.client.sendMessage("written while expired");
    r.client.startNewSession();
    await vi.advanceTimersByTimeAsync(0);
    expect(r.api.calls).toBe(2);
    const ws2 = r.server.last;
    ws2.accept();
    expect(ws2.frames()[0]).toMatchObject({ type: "hello", last_event_id: null });
    ws2.push(welcome());
    ws2.push({ type: "snapshot", cursor: "1-1", profile: { display_name: null, language: null }, conversations: [{ conversation_id: "c1", title: "New chat", started_at: "2025-01-01T00:00:00Z", messages: [], pending: null }] });
    expect(sends(ws2).map((f) => f.text)).toEqual(["written while expired"]);
  });
});

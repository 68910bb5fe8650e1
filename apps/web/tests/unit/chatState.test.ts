import { describe, expect, it } from "vitest";
import { reduce } from "@/lib/chatState";
import { initialState, type ChatState, type OutboxEntry } from "@/lib/chatTypes";
import { applyFrame } from "@/lib/frames";
import { activeConversation } from "@/lib/selectors";
import { parseServerFrame, type ServerFrame } from "@/lib/protocol";
import { AT, ev, welcome } from "./support/fakeSocket";

const NOW = Date.parse("2025-01-01T12:00:00Z");

function fold(state: ChatState, frames: object[]): ChatState {
  return reduce(state, { type: "frames", frames: frames as ServerFrame[], now: NOW });
}

/** A session with one conversation, as a fresh session's log starts. */
const opening = [
  ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
  ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
];

const turn = [
  ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }),
  ev("2-1", { type: "conversation_renamed", conversation_id: "c1", title: "Hi" }),
  ev("3-0", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }),
  ev("3-1", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "Hel" }),
  ev("3-2", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "lo " }),
  ev("3-3", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "world" }),
  ev("4-0", {
    type: "reply_completed",
    conversation_id: "c1",
    reply_id: "r1",
    in_reply_to: "m1",
    model: "Demo",
    usage: { prompt_tokens: 1, completion_tokens: 3 },
  }),
];

function conv(state: ChatState) {
  const c = state.conversations.c1;
  if (!c) throw new Error("no conversation c1");
  return c;
}

describe("folding events", () => {
  it("builds the history of a turn: user message, streamed reply, title", () => {
    const s = fold(initialState, [...opening, ...turn]);
    expect(conv(s).title).toBe("Hi");
    expect(conv(s).messages.map((m) => [m.role, m.text, m.status])).toEqual([
      ["user", "Hi", "complete"],
      ["assistant", "Hello world", "complete"],
    ]);
    expect(conv(s).pending).toBeNull();
    expect(s.cursor).toBe("4-0");
  });

  it("moves past a tokens_revoked event without changing the conversations", () => {
    const before = fold(initialState, [...opening, ...turn]);
    const frame = ev("5-0", { type: "tokens_revoked", generation: 1 });
    expect(parseServerFrame(JSON.stringify(frame))).not.toBeNull();
    const after = fold(before, [frame]);
    expect(after.cursor).toBe("5-0");
    expect(after.conversations).toEqual(before.conversations);
  });

  it("ignores any event at or below the last applied cursor (replays are harmless)", () => {
    const once = fold(initialState, [...opening, ...turn]);
    const twice = fold(once, [...opening, ...turn]);
    expect(twice).toBe(once);
  });

  it("compares cursors numerically when deduplicating", () => {
    const s = fold(initialState, [...opening, ...turn.slice(0, 3)]);
    const later = fold(s, [ev("10-0", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "x" })]);
    expect(later.conversations.c1!.pending!.reply!.text).toBe("x");
    const stale = fold(later, [ev("9-9", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "y" })]);
    expect(stale.conversations.c1!.pending!.reply!.text).toBe("x");
  });

  it("resumes in the middle of a reply without duplicating text", () => {
    // What a reload restores: the history as of cursor 3-1 ("Hel" streamed so far).
    const saved = fold(initialState, [...opening, ...turn.slice(0, 4)]);
    expect(saved.conversations.c1!.pending!.reply!.text).toBe("Hel");
    expect(saved.cursor).toBe("3-1");
    // A server replaying a little too much (from 3-0) must not double "Hel".
    const resumed = fold(saved, [welcome({ resume: "events" }), ...turn.slice(2), { type: "caught_up", cursor: "4-0" }]);
    expect(conv(resumed).messages.map((m) => m.text)).toEqual(["Hi", "Hello world"]);
  });

  it("a snapshot replaces the state instead of merging into it", () => {
    const before = fold(initialState, [...opening, ...turn.slice(0, 5)]);
    const snap = {
      type: "snapshot",
      cursor: "3-2",
      profile: { display_name: "Ada", language: null },
      conversations: [
        {
          conversation_id: "c1",
          title: "Hi",
          started_at: AT,
          messages: [
            { message_id: "m1", role: "user", text: "Hi", cursor: "2-0", at: AT, status: "complete", client_message_id: "k1" },
          ],
          pending: { message_id: "m1", cancel_requested: false, reply: { reply_id: "r1", text: "Hello ", model: "Demo", attempt: 1 } },
        },
      ],
    };
    const after = fold(before, [welcome(), snap, turn[5]!, turn[6]!]);
    expect(after.profile.displayName).toBe("Ada");
    expect(conv(after).messages.map((m) => m.text)).toEqual(["Hi", "Hello world"]);
  });

  it("keeps the partial text of a cancelled reply and marks it stopped", () => {
    const s = fold(initialState, [
      ...opening,
      ...turn.slice(0, 4),
      ev("5-0", { type: "reply_cancel_requested", conversation_id: "c1", in_reply_to: "m1", reply_id: "r1" }),
      ev("5-1", { type: "reply_cancelled", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", partial_text: "Hel" }),
    ]);
    const last = conv(s).messages.at(-1)!;
    expect([last.status, last.text]).toEqual(["cancelled", "Hel"]);
    expect(conv(s).pending).toBeNull();
  });

  it("shows a failed reply with its reason", () => {
    const s = fold(initialState, [
      ...opening,
      ...turn.slice(0, 3),
      ev("5-0", {
        type: "reply_failed",
        conversation_id: "c1",
        reply_id: "r1",
        in_reply_to: "m1",
        code: "llm_unavailable",
        reason: "The model is unavailable right now.",
        partial_text: "",
      }),
    ]);
    const last = conv(s).messages.at(-1)!;
    expect(last).toMatchObject({ status: "failed", errorCode: "llm_unavailable", error: "The model is unavailable right now." });
  });

  it("replaces an abandoned attempt by its retry", () => {
    const s = fold(initialState, [
      ...opening,
      ...turn.slice(0, 4),
      ev("5-0", { type: "reply_abandoned", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", reason: "worker lost" }),
    ]);
    expect(conv(s).pending).toMatchObject({ reply: null, interrupted: "worker lost" });
    const retried = fold(s, [
      ev("6-0", { type: "reply_started", conversation_id: "c1", reply_id: "r2", in_reply_to: "m1", model: "Demo", attempt: 2 }),
      ev("6-1", { type: "reply_delta", conversation_id: "c1", reply_id: "r2", text: "Fresh" }),
      ev("6-2", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "stale" }),
      ev("7-0", { type: "reply_completed", conversation_id: "c1", reply_id: "r2", in_reply_to: "m1", model: "Demo" }),
    ]);
    expect(conv(retried).messages.map((m) => m.text)).toEqual(["Hi", "Fresh"]);
  });

  it("drives the typing state from reply events only", () => {
    const typing = (s: ChatState) => activeConversation(s)?.pending?.reply != null;
    let s = fold(initialState, [...opening, ...turn.slice(0, 2)]);
    expect(typing(s)).toBe(false);
    s = fold(s, [turn[2]!]);
    expect(typing(s)).toBe(true);
    s = fold(s, turn.slice(3));
    expect(typing(s)).toBe(false);
  });

  it("announces completed replies once caught up, not replayed ones", () => {
    const replayed = fold(initialState, [...opening, ...turn]);
    expect(replayed.announcement).toBeNull();
    const live = fold(initialState, [{ type: "caught_up", cursor: null }, ...opening, ...turn]);
    expect(live.announcement?.text).toBe("Assistant replied: Hello world");
  });
});

describe("acks and errors for the outbox", () => {
  const entry: OutboxEntry = {
    clientMessageId: "k1",
    conversationId: "c1",
    text: "Hi",
    createdAt: AT,
    notBefore: null,
    error: null,
  };
  const withEntry = () => reduce(fold(initialState, opening), { type: "outbox_added", entry });

  it("an ack moves the message from the outbox into the history, and its event does not duplicate it", () => {
    const acked = applyFrame(
      withEntry(),
      { type: "ack", for_type: "send", cursor: "2-0", conversation_id: "c1", client_message_id: "k1", message_id: "m1" },
      NOW,
    );
    expect(acked.outbox).toHaveLength(0);
    expect(conv(acked).messages.map((m) => m.text)).toEqual(["Hi"]);
    expect(conv(acked).pending?.messageId).toBe("m1");
    const evented = fold(acked, [turn[0]!, turn[2]!]);
    expect(conv(evented).messages.map((m) => m.id)).toEqual(["m1"]);
    expect(conv(evented).pending?.reply?.replyId).toBe("r1");
  });

  it("the message's event alone also clears the outbox (the ack was lost with the connection)", () => {
    const s = fold(withEntry(), [turn[0]!]);
    expect(s.outbox).toHaveLength(0);
  });

  it("rate limiting delays the entry by retry_after and tells the user", () => {
    const s = applyFrame(withEntry(), { type: "error", code: "rate_limited", message: "slow down", request_id: "k1", retry_after: 7 }, NOW);
    expect(s.outbox[0]!.notBefore).toBe(NOW + 7000);
    expect(s.outbox[0]!.error).toBeNull();
    expect(s.notice?.text).toMatch(/7 s/);
  });

  it("a spent budget delays the entry by retry_after and says why", () => {
    const s = applyFrame(withEntry(), { type: "error", code: "budget_exceeded", message: "spent", request_id: "k1", retry_after: 42 }, NOW);
    expect(s.outbox[0]!.notBefore).toBe(NOW + 42000);
    expect(s.outbox[0]!.error).toBeNull();
    expect(s.notice?.text).toMatch(/budget.*42 s/);
  });

  it("a permanent refusal keeps the text and marks it failed", () => {
    const s = applyFrame(
      withEntry(),
      { type: "error", code: "message_too_long", message: "the message has 9000 characters", request_id: "k1" },
      NOW,
    );
    expect(s.outbox[0]).toMatchObject({ text: "Hi", error: { code: "message_too_long" } });
  });

  it("reply_in_progress puts the entry back to wait", () => {
    const s = applyFrame(withEntry(), { type: "error", code: "reply_in_progress", message: "busy", request_id: "k1" }, NOW);
    expect(s.outbox[0]!.error).toBeNull();
    expect(s.outbox[0]!.notBefore).toBeGreaterThan(NOW);
  });

  it("a new session keeps unsent messages and sends them to its first conversation", () => {
    const discarded = reduce(withEntry(), { type: "session_discarded" });
    expect(discarded.outbox[0]!.conversationId).toBeNull();
    const created = reduce(discarded, {
      type: "session_created",
      session: { sessionId: "s2", token: "t2", tokenExpiresAt: null },
      conversationId: "c9",
    });
    expect(created.outbox[0]!.conversationId).toBe("c9");
    expect(created.cursor).toBeNull();
  });
});

describe("several tabs", () => {
  const mine: OutboxEntry = { clientMessageId: "a", conversationId: "c1", text: "mine", createdAt: AT, notBefore: null, error: null };
  const theirs: OutboxEntry = { ...mine, clientMessageId: "b", text: "theirs" };

  it("takes in the messages another tab stored, without duplicating its own", () => {
    const s = reduce(reduce(fold(initialState, opening), { type: "outbox_added", entry: mine }), {
      type: "outbox_merged",
      entries: [mine, theirs],
    });
    expect(s.outbox.map((e) => e.text)).toEqual(["mine", "theirs"]);
  });

  it("does not take back what the server already recorded", () => {
    const s = reduce(fold(initialState, [...opening, turn[0]!]), {
      type: "outbox_merged",
      entries: [{ ...theirs, clientMessageId: "k1" }],
    });
    expect(s.outbox).toHaveLength(0);
  });
});

describe("an unknown cursor", () => {
  it("is forgotten so the next hello asks for a snapshot", () => {
    const s = reduce(fold(initialState, [...opening, ...turn]), { type: "cursor_reset" });
    expect(s.cursor).toBeNull();
    expect(s.conversations.c1).toBeDefined(); // still shown until the snapshot replaces it
  });
});

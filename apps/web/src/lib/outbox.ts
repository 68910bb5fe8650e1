/**
 * The outbox: messages typed and not yet confirmed. How an entry is delivered (its `ack`, or
 * its `message_submitted` event on resume), how a refusal changes it (wait, or keep it with
 * the reason), and the user's actions on it. Sending is the controller's (chatClient.ts).
 */

import type { ChatAction, ChatState, OutboxEntry } from "./chatTypes";
import { leafOf, newTurn, userMessage, withConversation } from "./fold";
import { describeError } from "./notices";
import type { AckFrame, ErrorFrame } from "./protocol";

/** Codes for which sending the same message again can never succeed. */
const PERMANENT_SEND_ERRORS: ReadonlySet<string> = new Set([
  "empty_message",
  "message_too_long",
  "unknown_conversation",
  "invalid_id",
  "bad_frame",
  "frame_too_big",
]);

/** Outbox entries whose message the server has recorded are delivered: drop them. */
export function pruneDelivered(outbox: readonly OutboxEntry[], state: ChatState): readonly OutboxEntry[] {
  if (outbox.length === 0) return outbox;
  const delivered = new Set<string>();
  for (const id of state.order) {
    const conv = state.conversations[id];
    if (!conv) continue;
    for (const m of conv.messages) if (m.clientMessageId) delivered.add(m.clientMessageId);
    for (const m of conv.branches) if (m.clientMessageId) delivered.add(m.clientMessageId);
  }
  const kept = outbox.filter((e) => !delivered.has(e.clientMessageId));
  return kept.length === outbox.length ? outbox : kept;
}

/** The outbox without the entry of `clientMessageId` (its message was recorded); the same
 * array when there is none. */
export function withoutEntry(outbox: readonly OutboxEntry[], clientMessageId: string): readonly OutboxEntry[] {
  const kept = outbox.filter((e) => e.clientMessageId !== clientMessageId);
  return kept.length === outbox.length ? outbox : kept;
}

/** Entries with no conversation of this session go to `conversationId`, at once. */
export function retarget(outbox: readonly OutboxEntry[], conversationId: string, known: ChatState): OutboxEntry[] {
  return outbox.map((e) =>
    e.conversationId === null || !known.conversations[e.conversationId]
      ? { ...e, conversationId, notBefore: null }
      : e,
  );
}

/** The entry after the server refused it with `frame`: to be sent again later, or kept with
 * the reason when sending it again can never succeed. */
export function refusedEntry(entry: OutboxEntry, frame: ErrorFrame, now: number): OutboxEntry {
  if (frame.code === "rate_limited" || frame.code === "budget_exceeded") {
    return { ...entry, notBefore: now + Math.max(1, frame.retry_after ?? 5) * 1000 };
  }
  if (frame.code === "reply_in_progress") {
    // The conversation is still answering: wait for its terminal reply, and a little anyway.
    return { ...entry, notBefore: now + 1500 };
  }
  if (PERMANENT_SEND_ERRORS.has(frame.code)) {
    return { ...entry, error: { code: frame.code, message: describeError(frame.code, frame.message) } };
  }
  return { ...entry, notBefore: now + Math.max(1, frame.retry_after ?? 3) * 1000 };
}

/** A `send` was recorded: its entry leaves the outbox and its message shows at once (its
 * `message_submitted` event replaces it). */
export function applyAck(state: ChatState, frame: AckFrame, now: number): ChatState {
  if (frame.for_type !== "send" || !frame.client_message_id) return state;
  const entry = state.outbox.find((e) => e.clientMessageId === frame.client_message_id);
  if (!entry) return state;
  const outbox = state.outbox.filter((e) => e !== entry);
  const conversationId = frame.conversation_id ?? entry.conversationId;
  const messageId = frame.message_id;
  let next: ChatState = { ...state, outbox };
  if (conversationId && messageId) {
    next = withConversation(next, conversationId, (conv) => {
      if (conv.messages.some((m) => m.id === messageId || m.clientMessageId === entry.clientMessageId)) {
        return conv;
      }
      const at = new Date(now).toISOString();
      const message = userMessage(messageId, entry.text, frame.cursor, at, entry.clientMessageId, leafOf(conv));
      const pending = conv.pending ?? (frame.duplicate ? null : newTurn(messageId, entry.clientMessageId));
      return { ...conv, messages: [...conv.messages, message], pending };
    });
  }
  return next;
}

type OutboxAction = Extract<
  ChatAction,
  { type: "outbox_added" | "outbox_merged" | "outbox_removed" | "outbox_retry" | "outbox_refused" }
>;

/** The user's (and the controller's) actions on the outbox. */
export function reduceOutbox(state: ChatState, action: OutboxAction): ChatState {
  switch (action.type) {
    case "outbox_added":
      return { ...state, outbox: [...state.outbox, action.entry] };
    case "outbox_merged": {
      // Another tab of this session stored messages this one does not know: take them too
      // (a message sent by both tabs is recorded once: the server knows its client id).
      const known = new Set(state.outbox.map((e) => e.clientMessageId));
      const added = action.entries.filter((e) => !known.has(e.clientMessageId));
      if (added.length === 0) return state;
      const outbox = pruneDelivered([...state.outbox, ...added], state);
      return outbox.length === state.outbox.length ? state : { ...state, outbox };
    }
    case "outbox_removed":
      return { ...state, outbox: state.outbox.filter((e) => e.clientMessageId !== action.clientMessageId) };
    case "outbox_retry":
      return {
        ...state,
        outbox: state.outbox.map((e) =>
          e.clientMessageId === action.clientMessageId ? { ...e, error: null, notBefore: null } : e,
        ),
      };
    case "outbox_refused":
      return {
        ...state,
        outbox: state.outbox.map((e) =>
          e.clientMessageId === action.clientMessageId
            ? { ...e, error: { code: action.code, message: action.message } }
            : e,
        ),
      };
    default: {
      const unknown: never = action;
      void unknown;
      return state;
    }
  }
}

/** Outbox entries of a conversation, oldest first. */
export function outboxFor(state: ChatState, conversationId: string | null): OutboxEntry[] {
  return state.outbox.filter((e) => e.conversationId === conversationId);
}

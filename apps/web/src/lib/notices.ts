/**
 * What the user is told: transient notices (a command the server refused) and what the polite
 * live region announces (finished replies, never every token).
 */

import type { ChatState, Notice } from "./chatTypes";
import { SESSION_GONE_CODES, type ChatEvent } from "./protocol";

export function nextNotice(previous: Notice | null, text: string): Notice {
  return { id: (previous?.id ?? 0) + 1, text };
}

/** Errors about the connection itself: the connection status shows them, not a notice. */
const CONNECTION_ERRORS: ReadonlySet<string> = new Set([
  "bad_cursor",
  "unsupported_protocol",
  "hello_timeout",
  "hello_required",
  "already_authenticated",
]);

/** True for an error code that is neither a notice nor a refusal of an outbox entry. */
export function isQuietError(code: string): boolean {
  // nothing_to_cancel: the reply ended before the stop arrived.
  return SESSION_GONE_CODES.has(code) || CONNECTION_ERRORS.has(code) || code === "nothing_to_cancel";
}

export function rateLimitedText(waitMs: number): string {
  return `Sending too fast: your message will go out in ${Math.ceil(waitMs / 1000)} s.`;
}

export function budgetExceededText(waitMs: number): string {
  return `The assistant's budget is used up for now: your message will go out in ${Math.ceil(waitMs / 1000)} s.`;
}

/** The announcement an event makes, once the client is caught up (a replayed reply is not
 * news). Reads the state after the event was folded in. */
export function announce(state: ChatState, event: ChatEvent): ChatState {
  if (!state.caughtUp) return state;
  let text: string | null = null;
  if (event.type === "reply_completed") {
    const conv = state.conversations[event.conversation_id];
    const last = conv?.messages[conv.messages.length - 1];
    const body = last?.text ?? "";
    text = `Assistant replied: ${body.length > 280 ? `${body.slice(0, 280)}…` : body}`;
  } else if (event.type === "reply_failed") {
    text = `The reply failed: ${event.reason}`;
  } else if (event.type === "reply_cancelled") {
    text = "The reply was stopped.";
  }
  return text === null ? state : { ...state, announcement: nextNotice(state.announcement, text) };
}

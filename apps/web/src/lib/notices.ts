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

/** What each refusal means, in words a user can act on (the `code` of an `error` frame). */
const ERROR_WORDS: Readonly<Record<string, string>> = {
  reply_in_progress: "The assistant is still answering in this conversation: wait for the reply to finish, or stop it first.",
  unknown_message: "That message is no longer in this conversation.",
  unknown_conversation: "This conversation no longer exists.",
  session_full: "This session is full: delete a conversation (or all your chats) to keep chatting.",
  empty_message: "The message is empty.",
  message_too_long: "The message is too long for this server.",
  too_many_conversations: "You have too many conversations: delete one to start another.",
  conversation_exists: "That conversation already exists.",
  invalid_profile: "That name or language cannot be used.",
  conflict: "The server was busy recording something else: try again.",
  unavailable: "The server cannot reach its storage right now: try again in a moment.",
  internal_error: "Something went wrong on the server: try again.",
  bad_frame: "The server could not read that request (this page may be out of date: reload it).",
  rate_limited: "Too many requests in a short time: wait a moment and try again.",
  budget_exceeded: "The assistant's budget is used up for now: try again in a little while.",
  unauthorized: "This session was signed out: reload the page to start again.",
};

/** A refused frame's reason, in words: the known codes' own text, else the server's message
 * (every error frame has one fit to show), else the code itself. */
export function describeError(code: string, message?: string | null): string {
  return ERROR_WORDS[code] ?? (message || `The server refused the request (${code}).`);
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

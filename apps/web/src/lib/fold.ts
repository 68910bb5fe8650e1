/**
 * The fold of the session's events into its history: the client's copy of the server's fold
 * (`src/chatcore/view.py`), so that a history rebuilt from events is the one the server holds.
 *
 * `applyEvent` touches only the history (profile, conversations and their order); what the
 * client does besides with an event (the cursor, the outbox, announcements) is in frames.ts.
 * The shared fixture `tests/fixtures/folds.json`, written from the Python fold by
 * `tests/support/fold_fixtures.py`, holds the two to the same results (tests/unit/fold.test.ts).
 */

import type { ChatMessage, Conversation, PendingTurn, SessionHistory } from "./chatTypes";
import type { ChatEvent, MessageStatus } from "./protocol";

/** `state` with one conversation replaced by `update(conversation)`; the same object when
 * there is no such conversation or nothing changed. */
export function withConversation<S extends SessionHistory>(
  state: S,
  id: string,
  update: (conv: Conversation) => Conversation,
): S {
  const conv = state.conversations[id];
  if (conv === undefined) return state;
  const next = update(conv);
  if (next === conv) return state;
  return { ...state, conversations: { ...state.conversations, [id]: next } };
}

/** A user's message as the history shows it. */
export function userMessage(
  id: string,
  text: string,
  cursor: string | null,
  at: string,
  clientMessageId: string,
): ChatMessage {
  return {
    id,
    role: "user",
    text,
    cursor,
    at,
    status: "complete",
    clientMessageId,
    inReplyTo: null,
    models: [],
    errorCode: null,
    error: null,
  };
}

/** The turn waiting for an answer to a user message just recorded. */
export function newTurn(messageId: string, clientMessageId: string): PendingTurn {
  return { messageId, clientMessageId, cancelRequested: false, reply: null, interrupted: null };
}

type TerminalEvent = Extract<ChatEvent, { type: "reply_completed" | "reply_failed" | "reply_cancelled" }>;

function closeTurn<S extends SessionHistory>(state: S, event: TerminalEvent, cursor: string): S {
  return withConversation(state, event.conversation_id, (conv) => {
    const turn = conv.pending;
    if (turn === null || turn.messageId !== event.in_reply_to) return conv;
    const draft = turn.reply;
    if (event.reply_id !== null && (draft === null || draft.replyId !== event.reply_id)) return conv;
    let text: string;
    let status: MessageStatus;
    let errorCode: string | null = null;
    let error: string | null = null;
    if (event.type === "reply_completed") {
      text = draft?.text ?? "";
      status = "complete";
    } else if (event.type === "reply_failed") {
      text = event.partial_text ?? "";
      status = "failed";
      errorCode = event.code;
      error = event.reason;
    } else {
      text = event.partial_text ?? "";
      status = "cancelled";
    }
    const message: ChatMessage = {
      id: event.reply_id ?? `${event.in_reply_to}.reply`,
      role: "assistant",
      text,
      cursor,
      at: event.at,
      status,
      clientMessageId: null,
      inReplyTo: event.in_reply_to,
      models: draft ? draft.models : [],
      errorCode,
      error,
    };
    return { ...conv, messages: [...conv.messages, message], pending: null };
  });
}

/** Fold one event, recorded at `cursor`, into the history. An event that does not fit (an
 * unknown conversation, a reply that is not the current one) changes nothing. */
export function applyEvent<S extends SessionHistory>(state: S, event: ChatEvent, cursor: string): S {
  switch (event.type) {
    case "session_opened":
    case "session_restored":
    case "tokens_revoked": // the server closes this connection (4001) if its token is older
      return state;
    case "profile_updated":
      return {
        ...state,
        profile: { displayName: event.display_name ?? null, language: event.language ?? null },
      };
    case "conversation_started": {
      if (state.conversations[event.conversation_id]) return state;
      const conv: Conversation = {
        id: event.conversation_id,
        title: event.title,
        startedAt: event.at,
        messages: [],
        pending: null,
      };
      return {
        ...state,
        conversations: { ...state.conversations, [conv.id]: conv },
        order: [...state.order, conv.id],
      };
    }
    case "conversation_renamed":
      return withConversation(state, event.conversation_id, (conv) =>
        conv.title === event.title ? conv : { ...conv, title: event.title },
      );
    case "message_submitted":
      return withConversation(state, event.conversation_id, (conv) => {
        const message = userMessage(event.message_id, event.text, cursor, event.at, event.client_message_id);
        // The ack may have put it there already: replace, never duplicate.
        const index = conv.messages.findIndex((m) => m.id === event.message_id);
        const messages =
          index >= 0
            ? conv.messages.map((m, i) => (i === index ? message : m))
            : [...conv.messages, message];
        const pending =
          conv.pending !== null && conv.pending.messageId === event.message_id
            ? conv.pending
            : newTurn(event.message_id, event.client_message_id);
        return { ...conv, messages, pending };
      });
    case "reply_started":
      return withConversation(state, event.conversation_id, (conv) => {
        if (conv.pending === null || conv.pending.messageId !== event.in_reply_to) return conv;
        return {
          ...conv,
          pending: {
            ...conv.pending,
            interrupted: null,
            reply: {
              replyId: event.reply_id,
              text: "",
              models: [event.model],
              attempt: event.attempt ?? 1,
              startedAt: event.at,
            },
          },
        };
      });
    case "reply_delta":
      return withConversation(state, event.conversation_id, (conv) => {
        const reply = conv.pending?.reply;
        if (!conv.pending || !reply || reply.replyId !== event.reply_id) return conv;
        return {
          ...conv,
          pending: { ...conv.pending, reply: { ...reply, text: reply.text + event.text } },
        };
      });
    case "reply_model_switched":
      return withConversation(state, event.conversation_id, (conv) => {
        const reply = conv.pending?.reply;
        if (!conv.pending || !reply || reply.replyId !== event.reply_id) return conv;
        return {
          ...conv,
          pending: { ...conv.pending, reply: { ...reply, models: [...reply.models, event.to_model] } },
        };
      });
    case "reply_abandoned":
      return withConversation(state, event.conversation_id, (conv) => {
        const turn = conv.pending;
        if (!turn || turn.messageId !== event.in_reply_to) return conv;
        if (!turn.reply || turn.reply.replyId !== event.reply_id) return conv;
        return { ...conv, pending: { ...turn, reply: null, interrupted: event.reason || "interrupted" } };
      });
    case "reply_cancel_requested":
      return withConversation(state, event.conversation_id, (conv) => {
        const turn = conv.pending;
        if (!turn || turn.messageId !== event.in_reply_to || turn.cancelRequested) return conv;
        return { ...conv, pending: { ...turn, cancelRequested: true } };
      });
    case "reply_completed":
    case "reply_failed":
    case "reply_cancelled":
      return closeTurn(state, event, cursor);
    default: {
      const unknown: never = event;
      void unknown;
      return state;
    }
  }
}

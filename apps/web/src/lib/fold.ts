/**
 * The fold of the session's events into its history: the client's copy of the server's fold
 * (`src/chatcore/view.py`), so that a history rebuilt from events is the one the server holds.
 *
 * `applyEvent` touches only the history (profile, conversations and their order); what the
 * client does besides with an event (the cursor, the outbox, announcements) is in frames.ts.
 *
 * A conversation is a tree of messages (each names its `parentId`): an edit adds a sibling of
 * a user message, a regeneration a sibling of an answer. `messages` is the active path,
 * `branches` every other message; nothing is ever overwritten. Only a change of path
 * (`message_edited`, `reply_requested`, `branch_selected`) moves messages between the two.
 * The shared fixture `tests/fixtures/folds.json`, written from the Python fold by
 * `tests/support/fold_fixtures.py`, holds the two to the same results (tests/unit/fold.test.ts).
 */

import type { ChatMessage, Conversation, PendingTurn, SessionHistory } from "./chatTypes";
import { compareCursors } from "./cursor";
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
  parentId: string | null,
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
    parentId,
  };
}

/** The last message of the active path (what a new message follows), or null. */
export function leafOf(conv: Conversation): string | null {
  return conv.messages.length > 0 ? conv.messages[conv.messages.length - 1]!.id : null;
}

/** The message `id` of the conversation, on the active path or not. */
export function findMessage(conv: Conversation, id: string): ChatMessage | undefined {
  return conv.messages.find((m) => m.id === id) ?? conv.branches.find((m) => m.id === id);
}

/** Oldest first, by the cursor of the event that recorded them (a message not confirmed yet,
 * with no cursor, last). */
function byCursor(a: ChatMessage, b: ChatMessage): number {
  if (a.cursor === null || b.cursor === null) return a.cursor === b.cursor ? 0 : a.cursor === null ? 1 : -1;
  return compareCursors(a.cursor, b.cursor);
}

/**
 * The conversation with the path from its start to `leafId` active (null: an empty path,
 * before a new first message), every other message in `branches`, oldest first. Null when
 * `leafId` or one of its ancestors is unknown (the server's fold counts that an anomaly and
 * changes nothing).
 */
export function activate(conv: Conversation, leafId: string | null): Conversation | null {
  if (leafId === leafOf(conv)) return conv;
  const byId = new Map<string, ChatMessage>();
  for (const m of conv.messages) byId.set(m.id, m);
  for (const m of conv.branches) byId.set(m.id, m);
  const path: ChatMessage[] = [];
  for (let at = leafId; at !== null; ) {
    const message = byId.get(at);
    if (message === undefined || path.length > byId.size) return null;
    path.push(message);
    at = message.parentId;
  }
  path.reverse();
  const onPath = new Set(path.map((m) => m.id));
  const branches = [...byId.values()].filter((m) => !onPath.has(m.id)).sort(byCursor);
  return { ...conv, messages: path, branches };
}

/** The id of an answer closed before any attempt of it started (its terminal event has no
 * `reply_id`): `<message>.reply`, or `<message>.reply.<cursor>` for a regenerated one. */
export function answerId(inReplyTo: string, cursor: string, regenerated: boolean): string {
  return regenerated ? `${inReplyTo}.reply.${cursor}` : `${inReplyTo}.reply`;
}

/** True when `messageId` already has an answer: a turn on it is a regeneration (a message is
 * answered once per turn, and its first turn comes before any answer). */
function isAnswered(conv: Conversation, messageId: string): boolean {
  const answers = (m: ChatMessage) => m.role === "assistant" && m.inReplyTo === messageId;
  return conv.messages.some(answers) || conv.branches.some(answers);
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
      id: event.reply_id ?? answerId(event.in_reply_to, cursor, isAnswered(conv, event.in_reply_to)),
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
      parentId: event.in_reply_to,
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
        branches: [],
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
        // The ack may have put it there already: replace, never duplicate.
        const index = conv.messages.findIndex((m) => m.id === event.message_id);
        const parentId = index >= 0 ? conv.messages[index]!.parentId : leafOf(conv);
        const message = userMessage(event.message_id, event.text, cursor, event.at, event.client_message_id, parentId);
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
    case "message_edited":
      return withConversation(state, event.conversation_id, (conv) => {
        if (conv.pending !== null || findMessage(conv, event.edit_of) === undefined) return conv;
        if (findMessage(conv, event.message_id) !== undefined) return conv;
        const active = activate(conv, event.parent_id);
        if (active === null) return conv;
        const message = userMessage(event.message_id, event.text, cursor, event.at, event.client_message_id, event.parent_id);
        return {
          ...active,
          messages: [...active.messages, message],
          pending: newTurn(event.message_id, event.client_message_id),
        };
      });
    case "reply_requested":
      return withConversation(state, event.conversation_id, (conv) => {
        if (conv.pending !== null) return conv;
        const active = activate(conv, event.in_reply_to);
        if (active === null) return conv;
        return { ...active, pending: newTurn(event.in_reply_to, event.client_message_id) };
      });
    case "branch_selected":
      return withConversation(state, event.conversation_id, (conv) => {
        if (conv.pending !== null) return conv;
        return activate(conv, event.leaf_id) ?? conv;
      });
    case "conversation_deleted": {
      if (!state.conversations[event.conversation_id]) return state;
      const conversations = { ...state.conversations };
      delete conversations[event.conversation_id];
      return { ...state, conversations, order: state.order.filter((id) => id !== event.conversation_id) };
    }
    case "session_deleted":
      // The session's last word: every conversation goes (the profile stays, as in the
      // server's fold; the client starts a new session anyway).
      return { ...state, conversations: {}, order: [] };
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

/**
 * The client's state and the pure reducer that folds server frames and user actions into it.
 *
 * It mirrors the server's fold (`src/chatcore/view.py`) so that a history rebuilt from events
 * is the same as the one a snapshot describes. Two rules keep it honest across reconnects:
 * an event at or below `cursor` (the last one applied) is ignored, and a snapshot replaces
 * the session's state instead of being merged into it.
 *
 * Objects are never mutated: an unchanged message keeps its identity, so memoised rows do not
 * re-render while another row streams.
 */

import { isAfter, maxCursor } from "./cursor";
import type {
  AckFrame,
  ChatEvent,
  ConversationState,
  ErrorFrame,
  Limits,
  MessageStatus,
  ServerFrame,
  SnapshotFrame,
  WelcomeFrame,
} from "./protocol";
import { SESSION_GONE_CODES } from "./protocol";
import type { SocketStatus } from "./socket";

export interface ChatMessage {
  id: string;
  role: "user" | "assistant";
  text: string;
  cursor: string | null;
  at: string;
  status: MessageStatus;
  clientMessageId: string | null;
  inReplyTo: string | null;
  models: string[];
  errorCode: string | null;
  error: string | null;
}

export interface DraftReply {
  replyId: string;
  text: string;
  models: string[];
  attempt: number;
  startedAt: string;
}

/** A user message accepted by the server and not answered yet. */
export interface PendingTurn {
  messageId: string;
  clientMessageId: string | null;
  cancelRequested: boolean;
  reply: DraftReply | null;
  /** Why the last attempt was cut off (a retry follows), if it was. */
  interrupted: string | null;
}

export interface Conversation {
  id: string;
  title: string;
  startedAt: string;
  messages: ChatMessage[];
  pending: PendingTurn | null;
}

/** A message typed by the user and not yet confirmed by the server. */
export interface OutboxEntry {
  clientMessageId: string;
  /** null when typed before any session existed; set when the session is created. */
  conversationId: string | null;
  text: string;
  createdAt: string;
  /** Not before this time (ms since epoch): the server asked us to wait. */
  notBefore: number | null;
  /** A permanent refusal: the entry is kept (the text is not lost) but not sent again. */
  error: { code: string; message: string } | null;
}

export interface SessionInfo {
  sessionId: string;
  token: string;
  tokenExpiresAt: string | null;
}

export interface Profile {
  displayName: string | null;
  language: string | null;
}

export interface Notice {
  id: number;
  text: string;
}

export interface ChatState {
  /** False until the saved state (if any) was read from storage. */
  hydrated: boolean;
  session: SessionInfo | null;
  /** The last event applied: what the next `hello` resumes from. */
  cursor: string | null;
  /** True once the server said everything up to now was sent on this connection. */
  caughtUp: boolean;
  model: string | null;
  limits: Limits | null;
  profile: Profile;
  conversations: Readonly<Record<string, Conversation>>;
  /** Conversation ids, oldest first. */
  order: readonly string[];
  activeId: string | null;
  outbox: readonly OutboxEntry[];
  connection: SocketStatus;
  welcomeSeen: boolean;
  /** A transient message for the user (an error the server sent about a command). */
  notice: Notice | null;
  /** What the polite live region says (completed replies, not every token). */
  announcement: Notice | null;
}

export const initialState: ChatState = {
  hydrated: false,
  session: null,
  cursor: null,
  caughtUp: false,
  model: null,
  limits: null,
  profile: { displayName: null, language: null },
  conversations: {},
  order: [],
  activeId: null,
  outbox: [],
  connection: { kind: "idle" },
  welcomeSeen: false,
  notice: null,
  announcement: null,
};

/** What is kept in storage between visits (see storage.ts). */
export interface SavedChat {
  session: SessionInfo | null;
  cursor: string | null;
  model: string | null;
  limits: Limits | null;
  profile: Profile;
  conversations: Record<string, Conversation>;
  order: string[];
  activeId: string | null;
}

export type ChatAction =
  | {
      type: "restored";
      saved: SavedChat | null;
      outbox: OutboxEntry[];
      welcomeSeen: boolean;
    }
  | { type: "frames"; frames: readonly ServerFrame[]; now: number }
  | { type: "connection"; status: SocketStatus }
  | { type: "session_created"; session: SessionInfo; conversationId: string }
  | { type: "session_discarded" }
  | { type: "cursor_reset" }
  | { type: "outbox_added"; entry: OutboxEntry }
  | { type: "outbox_merged"; entries: readonly OutboxEntry[] }
  | { type: "outbox_removed"; clientMessageId: string }
  | { type: "outbox_retry"; clientMessageId: string }
  | { type: "outbox_refused"; clientMessageId: string; code: string; message: string }
  | { type: "conversation_selected"; conversationId: string }
  | { type: "conversation_opened"; conversationId: string; title: string; at: string }
  | { type: "welcome_dismissed" }
  | { type: "notice"; text: string | null };

// --- helpers ------------------------------------------------------------------------------

/** Codes for which sending the same message again can never succeed. */
const PERMANENT_SEND_ERRORS: ReadonlySet<string> = new Set([
  "empty_message",
  "message_too_long",
  "unknown_conversation",
  "invalid_id",
  "bad_frame",
  "frame_too_big",
]);

function withConversation(
  state: ChatState,
  id: string,
  update: (conv: Conversation) => Conversation,
): ChatState {
  const conv = state.conversations[id];
  if (conv === undefined) return state;
  const next = update(conv);
  if (next === conv) return state;
  return { ...state, conversations: { ...state.conversations, [id]: next } };
}

function nextNotice(previous: Notice | null, text: string): Notice {
  return { id: (previous?.id ?? 0) + 1, text };
}

function messageFromState(m: ConversationState["messages"][number]): ChatMessage {
  return {
    id: m.message_id,
    role: m.role,
    text: m.text,
    cursor: m.cursor,
    at: m.at,
    status: m.status,
    clientMessageId: m.client_message_id ?? null,
    inReplyTo: m.in_reply_to ?? null,
    models: m.models ?? [],
    errorCode: m.error_code ?? null,
    error: m.error ?? null,
  };
}

function conversationFromState(c: ConversationState): Conversation {
  const messages = c.messages.map(messageFromState);
  let pending: PendingTurn | null = null;
  if (c.pending) {
    const asked = messages.find((m) => m.id === c.pending!.message_id);
    const reply = c.pending.reply;
    pending = {
      messageId: c.pending.message_id,
      clientMessageId: asked?.clientMessageId ?? null,
      cancelRequested: c.pending.cancel_requested,
      interrupted: null,
      reply: reply
        ? {
            replyId: reply.reply_id,
            text: reply.text,
            models: [reply.model],
            attempt: reply.attempt,
            startedAt: c.started_at,
          }
        : null,
    };
  }
  return { id: c.conversation_id, title: c.title, startedAt: c.started_at, messages, pending };
}

/** Outbox entries whose message the server has recorded are delivered: drop them. */
function pruneDelivered(outbox: readonly OutboxEntry[], state: ChatState): readonly OutboxEntry[] {
  if (outbox.length === 0) return outbox;
  const delivered = new Set<string>();
  for (const id of state.order) {
    const conv = state.conversations[id];
    if (!conv) continue;
    for (const m of conv.messages) if (m.clientMessageId) delivered.add(m.clientMessageId);
  }
  const kept = outbox.filter((e) => !delivered.has(e.clientMessageId));
  return kept.length === outbox.length ? outbox : kept;
}

function activeOrFallback(state: ChatState): string | null {
  if (state.activeId !== null && state.conversations[state.activeId]) return state.activeId;
  return state.order.length > 0 ? state.order[state.order.length - 1]! : state.activeId;
}

// --- events -------------------------------------------------------------------------------

function closeTurn(
  state: ChatState,
  event: Extract<ChatEvent, { type: "reply_completed" | "reply_failed" | "reply_cancelled" }>,
  cursor: string,
): ChatState {
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

function announce(state: ChatState, event: ChatEvent): ChatState {
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

export function applyEvent(state: ChatState, event: ChatEvent, cursor: string): ChatState {
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
    case "message_submitted": {
      const next = withConversation(state, event.conversation_id, (conv) => {
        const message: ChatMessage = {
          id: event.message_id,
          role: "user",
          text: event.text,
          cursor,
          at: event.at,
          status: "complete",
          clientMessageId: event.client_message_id,
          inReplyTo: null,
          models: [],
          errorCode: null,
          error: null,
        };
        // The ack may have put it there already: replace, never duplicate.
        const index = conv.messages.findIndex((m) => m.id === event.message_id);
        const messages =
          index >= 0
            ? conv.messages.map((m, i) => (i === index ? message : m))
            : [...conv.messages, message];
        const pending: PendingTurn =
          conv.pending !== null && conv.pending.messageId === event.message_id
            ? conv.pending
            : {
                messageId: event.message_id,
                clientMessageId: event.client_message_id,
                cancelRequested: false,
                reply: null,
                interrupted: null,
              };
        return { ...conv, messages, pending };
      });
      const outbox = next.outbox.filter((e) => e.clientMessageId !== event.client_message_id);
      return outbox.length === next.outbox.length ? next : { ...next, outbox };
    }
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
      return announce(closeTurn(state, event, cursor), event);
    default: {
      const unknown: never = event;
      void unknown;
      return state;
    }
  }
}

// --- frames -------------------------------------------------------------------------------

function applyWelcome(state: ChatState, frame: WelcomeFrame): ChatState {
  return {
    ...state,
    session: {
      sessionId: frame.session_id,
      token: frame.token,
      tokenExpiresAt: frame.token_expires_at ?? null,
    },
    model: frame.model,
    limits: frame.limits,
    caughtUp: false,
  };
}

function applySnapshot(state: ChatState, frame: SnapshotFrame): ChatState {
  const conversations: Record<string, Conversation> = {};
  const order: string[] = [];
  for (const c of frame.conversations) {
    conversations[c.conversation_id] = conversationFromState(c);
    order.push(c.conversation_id);
  }
  const next: ChatState = {
    ...state,
    cursor: frame.cursor,
    profile: {
      displayName: frame.profile.display_name ?? null,
      language: frame.profile.language ?? null,
    },
    conversations,
    order,
    caughtUp: true,
  };
  const outbox = pruneDelivered(state.outbox, next);
  const withOutbox = outbox === next.outbox ? next : { ...next, outbox };
  return { ...withOutbox, activeId: activeOrFallback(withOutbox) };
}

function applyAck(state: ChatState, frame: AckFrame, now: number): ChatState {
  if (frame.for_type !== "send" || !frame.client_message_id) return state;
  const entry = state.outbox.find((e) => e.clientMessageId === frame.client_message_id);
  if (!entry) return state;
  const outbox = state.outbox.filter((e) => e !== entry);
  const conversationId = frame.conversation_id ?? entry.conversationId;
  const messageId = frame.message_id;
  let next: ChatState = { ...state, outbox };
  if (conversationId && messageId) {
    // Show the delivered message at once; its `message_submitted` event replaces it.
    next = withConversation(next, conversationId, (conv) => {
      if (conv.messages.some((m) => m.id === messageId || m.clientMessageId === entry.clientMessageId)) {
        return conv;
      }
      const message: ChatMessage = {
        id: messageId,
        role: "user",
        text: entry.text,
        cursor: frame.cursor,
        at: new Date(now).toISOString(),
        status: "complete",
        clientMessageId: entry.clientMessageId,
        inReplyTo: null,
        models: [],
        errorCode: null,
        error: null,
      };
      const pending: PendingTurn | null =
        conv.pending ??
        (frame.duplicate
          ? null
          : {
              messageId,
              clientMessageId: entry.clientMessageId,
              cancelRequested: false,
              reply: null,
              interrupted: null,
            });
      return { ...conv, messages: [...conv.messages, message], pending };
    });
  }
  return next;
}

/** Errors about the connection itself: the connection status shows them, not a notice. */
const CONNECTION_ERRORS: ReadonlySet<string> = new Set([
  "bad_cursor",
  "unsupported_protocol",
  "hello_timeout",
  "hello_required",
  "already_authenticated",
]);

function applyError(state: ChatState, frame: ErrorFrame, now: number): ChatState {
  if (SESSION_GONE_CODES.has(frame.code) || CONNECTION_ERRORS.has(frame.code)) return state;
  if (frame.code === "nothing_to_cancel") return state; // the reply ended before the stop arrived
  const entry = frame.request_id
    ? state.outbox.find((e) => e.clientMessageId === frame.request_id)
    : undefined;
  if (!entry) {
    return { ...state, notice: nextNotice(state.notice, frame.message || frame.code) };
  }
  let updated: OutboxEntry;
  if (frame.code === "rate_limited" || frame.code === "budget_exceeded") {
    const wait = Math.max(1, frame.retry_after ?? 5) * 1000;
    updated = { ...entry, notBefore: now + wait };
  } else if (frame.code === "reply_in_progress") {
    // The conversation is still answering: wait for its terminal reply, and a little anyway.
    updated = { ...entry, notBefore: now + 1500 };
  } else if (PERMANENT_SEND_ERRORS.has(frame.code)) {
    updated = { ...entry, error: { code: frame.code, message: frame.message || frame.code } };
  } else {
    updated = { ...entry, notBefore: now + Math.max(1, frame.retry_after ?? 3) * 1000 };
  }
  const inSeconds = Math.ceil(((updated.notBefore ?? now) - now) / 1000);
  const notice =
    frame.code === "rate_limited"
      ? nextNotice(state.notice, `Sending too fast: your message will go out in ${inSeconds} s.`)
      : frame.code === "budget_exceeded"
        ? nextNotice(state.notice, `The assistant's budget is used up for now: your message will go out in ${inSeconds} s.`)
        : state.notice;
  return { ...state, notice, outbox: state.outbox.map((e) => (e === entry ? updated : e)) };
}

export function applyFrame(state: ChatState, frame: ServerFrame, now: number): ChatState {
  switch (frame.type) {
    case "welcome":
      return applyWelcome(state, frame);
    case "snapshot":
      return applySnapshot(state, frame);
    case "event": {
      // The one rule that makes replays harmless: apply each log position at most once.
      if (!isAfter(frame.cursor, state.cursor)) return state;
      const next = applyEvent(state, frame.event, frame.cursor);
      let result: ChatState = { ...next, cursor: frame.cursor };
      if (frame.event.type === "conversation_started" && result.activeId === null) {
        result = { ...result, activeId: frame.event.conversation_id };
      }
      return result;
    }
    case "caught_up":
      return {
        ...state,
        caughtUp: true,
        cursor: frame.cursor === null ? state.cursor : maxCursor(state.cursor, frame.cursor),
        activeId: activeOrFallback(state),
      };
    case "ack":
      return applyAck(state, frame, now);
    case "error":
      return applyError(state, frame, now);
    case "pong":
      return state;
    default: {
      const unknown: never = frame;
      void unknown;
      return state;
    }
  }
}

// --- the reducer --------------------------------------------------------------------------

function retarget(outbox: readonly OutboxEntry[], conversationId: string, known: ChatState): OutboxEntry[] {
  return outbox.map((e) =>
    e.conversationId === null || !known.conversations[e.conversationId]
      ? { ...e, conversationId, notBefore: null }
      : e,
  );
}

export function reduce(state: ChatState, action: ChatAction): ChatState {
  switch (action.type) {
    case "restored": {
      const saved = action.saved;
      const base: ChatState = {
        ...state,
        hydrated: true,
        welcomeSeen: action.welcomeSeen,
        outbox: action.outbox,
      };
      if (!saved) return base;
      return {
        ...base,
        session: saved.session,
        cursor: saved.cursor,
        model: saved.model,
        limits: saved.limits,
        profile: saved.profile,
        conversations: saved.conversations,
        order: saved.order,
        activeId: saved.activeId,
      };
    }
    case "frames": {
      let next = state;
      for (const frame of action.frames) next = applyFrame(next, frame, action.now);
      return next;
    }
    case "connection": {
      const next = { ...state, connection: action.status };
      return action.status.kind === "open" ? next : { ...next, caughtUp: false };
    }
    case "session_created": {
      const fresh: ChatState = {
        ...state,
        session: action.session,
        cursor: null,
        caughtUp: false,
        conversations: {},
        order: [],
        activeId: action.conversationId,
      };
      return { ...fresh, outbox: retarget(state.outbox, action.conversationId, fresh) };
    }
    case "cursor_reset":
      // The server does not know our cursor: the next hello asks for a snapshot instead.
      return { ...state, cursor: null, caughtUp: false };
    case "session_discarded":
      return {
        ...state,
        session: null,
        cursor: null,
        caughtUp: false,
        conversations: {},
        order: [],
        activeId: null,
        // Unsent messages survive: they go to the new session's first conversation.
        outbox: state.outbox.map((e) => ({ ...e, conversationId: null, notBefore: null })),
      };
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
    case "conversation_selected":
      return state.activeId === action.conversationId ? state : { ...state, activeId: action.conversationId };
    case "conversation_opened": {
      // Shown at once; the server's `conversation_started` for the same id is then a no-op.
      if (state.conversations[action.conversationId]) {
        return { ...state, activeId: action.conversationId };
      }
      const conv: Conversation = {
        id: action.conversationId,
        title: action.title,
        startedAt: action.at,
        messages: [],
        pending: null,
      };
      return {
        ...state,
        conversations: { ...state.conversations, [conv.id]: conv },
        order: [...state.order, conv.id],
        activeId: conv.id,
      };
    }
    case "welcome_dismissed":
      return { ...state, welcomeSeen: true };
    case "notice":
      return { ...state, notice: action.text === null ? null : nextNotice(state.notice, action.text) };
    default: {
      const unknown: never = action;
      void unknown;
      return state;
    }
  }
}

// --- selectors ----------------------------------------------------------------------------

export function activeConversation(state: ChatState): Conversation | null {
  const id = activeOrFallback(state);
  return id === null ? null : (state.conversations[id] ?? null);
}

/** Outbox entries of a conversation, oldest first. */
export function outboxFor(state: ChatState, conversationId: string | null): OutboxEntry[] {
  return state.outbox.filter((e) => e.conversationId === conversationId);
}

export function isSessionExpired(state: ChatState): boolean {
  return state.connection.kind === "expired";
}

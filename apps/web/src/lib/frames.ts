/**
 * What each server frame does to the client's state.
 *
 * Two rules keep the history honest across reconnects: an event at or below `cursor` (the
 * last one applied) is ignored, and a snapshot replaces the session's history instead of being
 * merged into it.
 */

import type { ChatMessage, ChatState, Conversation, PendingCommand, PendingTurn } from "./chatTypes";
import { isAfter, maxCursor } from "./cursor";
import { applyEvent } from "./fold";
import { announce, budgetExceededText, describeError, isQuietError, nextNotice, rateLimitedText } from "./notices";
import { applyAck, pruneDelivered, refusedEntry, withoutEntry } from "./outbox";
import type { ConversationState, ErrorFrame, EventFrame, ServerFrame, SnapshotFrame, WelcomeFrame } from "./protocol";
import { activeOrFallback } from "./selectors";

// --- snapshots ----------------------------------------------------------------------------

/** The commands without those `keep` refuses; the same array when none goes. */
function keepCommands(commands: readonly PendingCommand[], keep: (c: PendingCommand) => boolean): readonly PendingCommand[] {
  const kept = commands.filter(keep);
  return kept.length === commands.length ? commands : kept;
}


type MessageState = ConversationState["messages"][number];

/** `parentId` is the snapshot's `parent_id`; a server from before branches sent none, and
 * its messages follow each other (`previous`, the message before on the path). */
function messageFromState(m: MessageState, previous: string | null): ChatMessage {
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
    parentId: m.parent_id === undefined ? previous : m.parent_id,
  };
}

function conversationFromState(c: ConversationState): Conversation {
  const messages = c.messages.map((m, i) => messageFromState(m, i > 0 ? c.messages[i - 1]!.message_id : null));
  const branches = (c.branches ?? []).map((m) => messageFromState(m, null));
  let pending: PendingTurn | null = null;
  if (c.pending) {
    // (A server from before the snapshot named the turn's client message id and the reply's
    // start gave neither: the asked message and the conversation's start stand in.)
    const asked = messages.find((m) => m.id === c.pending!.message_id);
    const reply = c.pending.reply;
    pending = {
      messageId: c.pending.message_id,
      clientMessageId: c.pending.client_message_id ?? asked?.clientMessageId ?? null,
      cancelRequested: c.pending.cancel_requested,
      interrupted: null,
      reply: reply
        ? {
            replyId: reply.reply_id,
            text: reply.text,
            models: [reply.model],
            attempt: reply.attempt,
            startedAt: reply.started_at ?? c.started_at,
          }
        : null,
    };
  }
  return { id: c.conversation_id, title: c.title, startedAt: c.started_at, messages, branches, pending };
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
  // Commands about a conversation that is gone are moot; an edit the snapshot holds is done.
  const recorded = new Set<string>();
  for (const conv of Object.values(conversations)) {
    for (const m of [...conv.messages, ...conv.branches]) if (m.clientMessageId) recorded.add(m.clientMessageId);
  }
  const commands = keepCommands(
    state.commands,
    (c) =>
      (c.conversationId === null || conversations[c.conversationId] !== undefined) &&
      (c.clientMessageId === null || !recorded.has(c.clientMessageId)),
  );
  return { ...withOutbox, commands, activeId: activeOrFallback(withOutbox) };
}

// --- the other frames ---------------------------------------------------------------------

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

function applyEventFrame(state: ChatState, frame: EventFrame): ChatState {
  // The one rule that makes replays harmless: apply each log position at most once.
  if (!isAfter(frame.cursor, state.cursor)) return state;
  const event = frame.event;
  let next: ChatState = { ...applyEvent(state, event, frame.cursor), cursor: frame.cursor };
  if (event.type === "message_submitted") {
    const outbox = withoutEntry(next.outbox, event.client_message_id);
    if (outbox !== next.outbox) next = { ...next, outbox };
  } else if (event.type === "message_edited") {
    // Recorded: an edit sent before a lost connection is answered by its event.
    next = { ...next, commands: keepCommands(next.commands, (c) => c.clientMessageId !== event.client_message_id) };
  } else if (event.type === "conversation_deleted") {
    // Deleted for good, with what was waiting to be sent there and what was asked of it.
    const gone = event.conversation_id;
    next = {
      ...next,
      outbox: next.outbox.some((e) => e.conversationId === gone) ? next.outbox.filter((e) => e.conversationId !== gone) : next.outbox,
      commands: keepCommands(next.commands, (c) => c.conversationId !== gone),
    };
    next = { ...next, activeId: activeOrFallback(next) };
  } else if (event.type === "session_deleted") {
    next = { ...next, sessionDeleted: true, commands: [] };
  }
  next = announce(next, event);
  if (event.type === "conversation_started" && next.activeId === null) {
    next = { ...next, activeId: event.conversation_id };
  }
  return next;
}

/** A command's answer: an ack takes it off the list, an error keeps it with the reason (an
 * edit shows it beside its text; the others as a notice). */
function answerCommand(state: ChatState, requestId: string, error: ErrorFrame | null): ChatState | null {
  const command = state.commands.find((c) => c.requestId === requestId);
  if (!command) return null;
  if (error === null) return { ...state, commands: state.commands.filter((c) => c !== command) };
  const wait = error.code === "rate_limited" && error.retry_after ? Math.ceil(error.retry_after) : null;
  const words = wait !== null ? `Too many requests in a short time: try again in ${wait} s.` : describeError(error.code, error.message);
  const reason = { code: error.code, message: words };
  if (command.type === "edit") {
    return { ...state, commands: state.commands.map((c) => (c === command ? { ...c, error: reason } : c)) };
  }
  return {
    ...state,
    commands: state.commands.filter((c) => c !== command),
    notice: nextNotice(state.notice, reason.message),
  };
}

function applyError(state: ChatState, frame: ErrorFrame, now: number): ChatState {
  const answered = frame.request_id ? answerCommand(state, frame.request_id, frame) : null;
  if (answered !== null) return answered;
  if (isQuietError(frame.code)) return state;
  const entry = frame.request_id
    ? state.outbox.find((e) => e.clientMessageId === frame.request_id)
    : undefined;
  if (!entry) {
    return { ...state, notice: nextNotice(state.notice, describeError(frame.code, frame.message)) };
  }
  const updated = refusedEntry(entry, frame, now);
  const wait = (updated.notBefore ?? now) - now;
  const notice =
    frame.code === "rate_limited"
      ? nextNotice(state.notice, rateLimitedText(wait))
      : frame.code === "budget_exceeded"
        ? nextNotice(state.notice, budgetExceededText(wait))
        : state.notice;
  return { ...state, notice, outbox: state.outbox.map((e) => (e === entry ? updated : e)) };
}

export function applyFrame(state: ChatState, frame: ServerFrame, now: number): ChatState {
  switch (frame.type) {
    case "welcome":
      return applyWelcome(state, frame);
    case "snapshot":
      return applySnapshot(state, frame);
    case "event":
      return applyEventFrame(state, frame);
    case "caught_up":
      return {
        ...state,
        caughtUp: true,
        cursor: frame.cursor === null ? state.cursor : maxCursor(state.cursor, frame.cursor),
        activeId: activeOrFallback(state),
      };
    case "ack":
      return (frame.request_id ? answerCommand(state, frame.request_id, null) : null) ?? applyAck(state, frame, now);
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

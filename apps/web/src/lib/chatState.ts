/**
 * The client's reducer: every change to the state is one `ChatAction` (chatTypes.ts) folded in
 * here. Server frames go to frames.ts (and their events to the fold, fold.ts), the outbox's
 * actions to outbox.ts; what remains is the session's life cycle and the user's choices.
 */

import type { ChatAction, ChatState, Conversation, PendingCommand } from "./chatTypes";
import { applyFrame } from "./frames";
import { nextNotice } from "./notices";
import { reduceOutbox, retarget } from "./outbox";

/**
 * The commands left when the connection is lost before their answers came. Their outcome is
 * unknown, and the events after the reconnect tell it: an edit stays, marked, so its text can
 * be sent again (its client message id makes that safe); the others are forgotten.
 */
function unansweredLost(commands: readonly PendingCommand[]): readonly PendingCommand[] {
  if (commands.every((c) => c.error !== null)) return commands;
  return commands.flatMap((c) => {
    if (c.error !== null) return [c];
    if (c.type !== "edit") return [];
    return [{ ...c, error: { code: "connection_lost", message: CONNECTION_LOST } }];
  });
}

export const CONNECTION_LOST = "The connection dropped before the server answered. Send it again: it is recorded once.";

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
      if (action.status.kind === "open") return next;
      return { ...next, caughtUp: false, commands: unansweredLost(state.commands) };
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
        commands: [],
        sessionDeleted: false,
        // Unsent messages survive (they go to the new session's first conversation), unless
        // the user deleted their chats.
        outbox: action.dropOutbox ? [] : state.outbox.map((e) => ({ ...e, conversationId: null, notBefore: null })),
      };
    case "command_sent":
      return {
        ...state,
        commands: [...state.commands.filter((c) => c.requestId !== action.command.requestId), action.command],
      };
    case "command_dismissed": {
      const commands = state.commands.filter((c) => c.requestId !== action.requestId);
      return commands.length === state.commands.length ? state : { ...state, commands };
    }
    case "outbox_added":
    case "outbox_merged":
    case "outbox_removed":
    case "outbox_retry":
    case "outbox_refused":
      return reduceOutbox(state, action);
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
        branches: [],
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

/**
 * The client's reducer: every change to the state is one `ChatAction` (chatTypes.ts) folded in
 * here. Server frames go to frames.ts (and their events to the fold, fold.ts), the outbox's
 * actions to outbox.ts; what remains is the session's life cycle and the user's choices.
 */

import type { ChatAction, ChatState, Conversation } from "./chatTypes";
import { applyFrame } from "./frames";
import { nextNotice } from "./notices";
import { reduceOutbox, retarget } from "./outbox";

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

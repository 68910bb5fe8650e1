/** What the UI reads from the state, beyond its fields. */

import type { ChatState, Conversation } from "./chatTypes";

/** The conversation shown: the one chosen, else the newest. */
export function activeOrFallback(state: ChatState): string | null {
  if (state.activeId !== null && state.conversations[state.activeId]) return state.activeId;
  return state.order.length > 0 ? state.order[state.order.length - 1]! : state.activeId;
}

export function activeConversation(state: ChatState): Conversation | null {
  const id = activeOrFallback(state);
  return id === null ? null : (state.conversations[id] ?? null);
}

/** What the UI reads from the state, beyond its fields. */

import type { ChatMessage, ChatState, Conversation, CommandType } from "./chatTypes";
import { compareCursors } from "./cursor";

/** The conversation shown: the one chosen, else the newest. */
export function activeOrFallback(state: ChatState): string | null {
  if (state.activeId !== null && state.conversations[state.activeId]) return state.activeId;
  return state.order.length > 0 ? state.order[state.order.length - 1]! : state.activeId;
}

export function activeConversation(state: ChatState): Conversation | null {
  const id = activeOrFallback(state);
  return id === null ? null : (state.conversations[id] ?? null);
}

/** Where a message stands among its versions (the messages with the same parent). */
export interface Versions {
  /** 1-based, in the order the versions were recorded. */
  index: number;
  count: number;
  previous: string | null;
  next: string | null;
}

function recordedOrder(a: ChatMessage, b: ChatMessage): number {
  if (a.cursor === null || b.cursor === null) return a.cursor === b.cursor ? 0 : a.cursor === null ? 1 : -1;
  return compareCursors(a.cursor, b.cursor);
}

/** For each message of the active path that has other versions, where it stands among them
 * (the `< 2 / 3 >` switcher). Messages with a single version are not in the map. */
export function versionsOnPath(conv: Pick<Conversation, "messages" | "branches">): ReadonlyMap<string, Versions> {
  const result = new Map<string, Versions>();
  if (conv.branches.length === 0) return result;
  const byParent = new Map<string | null, ChatMessage[]>();
  for (const m of [...conv.messages, ...conv.branches]) {
    const group = byParent.get(m.parentId);
    if (group) group.push(m);
    else byParent.set(m.parentId, [m]);
  }
  for (const m of conv.messages) {
    const group = byParent.get(m.parentId);
    if (!group || group.length < 2) continue;
    group.sort(recordedOrder);
    const i = group.findIndex((v) => v.id === m.id);
    result.set(m.id, {
      index: i + 1,
      count: group.length,
      previous: i > 0 ? group[i - 1]!.id : null,
      next: i < group.length - 1 ? group[i + 1]!.id : null,
    });
  }
  return result;
}

/** Commands that change a conversation's path: one at a time, and not while it answers. */
const SHAPING: ReadonlySet<CommandType> = new Set(["edit", "regenerate", "select_branch"]);

/** Why an edit, a regeneration or a switch of version cannot be asked for now in `conv`, in
 * words; null when it can. */
export function shapingBlockedReason(state: ChatState, conv: Conversation): string | null {
  if (state.connection.kind !== "open") return "Not connected: wait for the connection to come back.";
  if (conv.pending !== null) {
    return conv.pending.cancelRequested
      ? "The reply is stopping: wait a moment."
      : "The assistant is still answering: wait for the reply to finish, or stop it.";
  }
  if (state.commands.some((c) => c.conversationId === conv.id && c.error === null && SHAPING.has(c.type))) {
    return "Waiting for the server to confirm the last change.";
  }
  return null;
}

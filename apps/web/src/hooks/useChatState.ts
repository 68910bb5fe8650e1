"use client";

import { useSyncExternalStore } from "react";
import type { ChatClient } from "@/lib/chatClient";
import { initialState, type ChatState } from "@/lib/chatTypes";

/** The whole state, read from the store outside React. */
export function useChatState(client: ChatClient): ChatState {
  return useSyncExternalStore(client.store.subscribe, client.store.getState, () => initialState);
}

/** One slice of the state; re-renders only when the selected value changes identity. */
export function useChatSelector<T>(client: ChatClient, select: (state: ChatState) => T): T {
  return useSyncExternalStore(
    client.store.subscribe,
    () => select(client.store.getState()),
    () => select(initialState),
  );
}

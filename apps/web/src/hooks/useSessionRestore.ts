"use client";

import { useEffect, useRef, useSyncExternalStore } from "react";
import type { ChatClient } from "@/lib/chatClient";
import type { ChatState } from "@/lib/chatTypes";
import {
  forgetDeletedChat,
  loadChat,
  loadOutbox,
  loadWelcomed,
  saveChat,
  saveOutbox,
  savedFromState,
  saveWelcomed,
  STORAGE_KEYS,
  type StorageLike,
} from "@/lib/storage";

function browserStorage(): StorageLike | null {
  try {
    return typeof window !== "undefined" ? window.localStorage : null;
  } catch {
    return null; // storage disabled (privacy settings): the chat works, without memory
  }
}

function historyChanged(a: ChatState, b: ChatState): boolean {
  return (
    a.session !== b.session ||
    a.cursor !== b.cursor ||
    a.conversations !== b.conversations ||
    a.order !== b.order ||
    a.activeId !== b.activeId ||
    a.profile !== b.profile ||
    a.model !== b.model ||
    a.limits !== b.limits ||
    a.sessionDeleted !== b.sessionDeleted
  );
}

/**
 * Reads the saved chat once (inside an effect: the static page has no storage at build time)
 * and keeps storage in step with the store afterwards:
 * - the outbox is written on every change, at once (nothing typed is lost by a reload);
 * - the session, cursor and history are written together (so they always agree), at most
 *   every `throttleMs` while a reply streams, and at once when the page is hidden or closed.
 *
 * Returns whether the saved state has been read (until then, do not connect).
 *
 * The effect depends on the client alone; the options are read through a ref. (A production
 * minifier once inlined the default `getStorage` as a fresh function per render: as an effect
 * dependency it re-ran the restore on every render, forever.)
 */
export function useSessionRestore(
  client: ChatClient,
  options: { getStorage?: () => StorageLike | null; throttleMs?: number } = {},
): boolean {
  const optionsRef = useRef(options);
  optionsRef.current = options;

  useEffect(() => {
    const storage = (optionsRef.current.getStorage ?? browserStorage)();
    const throttleMs = optionsRef.current.throttleMs ?? 400;
    const { store } = client;
    store.dispatch({
      type: "restored",
      saved: storage ? loadChat(storage) : null,
      outbox: storage ? loadOutbox(storage) : [],
      welcomeSeen: storage ? loadWelcomed(storage) : false,
    });
    if (!storage) return;

    let last = store.getState();
    let timer: ReturnType<typeof setTimeout> | null = null;
    const writeChat = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      const state = store.getState();
      // A deleted session is never written back (another tab may already keep a new one).
      if (state.sessionDeleted && state.session !== null) forgetDeletedChat(storage, state.session.sessionId);
      else saveChat(storage, savedFromState(state));
    };
    const unsubscribe = store.subscribe(() => {
      const state = store.getState();
      if (state.outbox !== last.outbox) saveOutbox(storage, state.outbox);
      if (state.welcomeSeen && !last.welcomeSeen) saveWelcomed(storage);
      if (state.session !== last.session) writeChat();
      else if (historyChanged(state, last) && timer === null) timer = setTimeout(writeChat, throttleMs);
      last = state;
    });
    const onHide = () => {
      store.flush();
      writeChat();
    };
    const onVisibility = () => {
      if (document.visibilityState === "hidden") onHide();
    };
    // Another tab wrote the outbox: keep its messages too, so neither tab's write loses them.
    const onStorage = (event: StorageEvent) => {
      if (event.key === STORAGE_KEYS.outbox) store.dispatch({ type: "outbox_merged", entries: loadOutbox(storage) });
    };
    window.addEventListener("storage", onStorage);
    window.addEventListener("pagehide", onHide);
    document.addEventListener("visibilitychange", onVisibility);
    return () => {
      unsubscribe();
      window.removeEventListener("pagehide", onHide);
      window.removeEventListener("storage", onStorage);
      document.removeEventListener("visibilitychange", onVisibility);
      if (timer !== null) writeChat();
    };
  }, [client]);

  return useSyncExternalStore(
    client.store.subscribe,
    () => client.store.getState().hydrated,
    () => false,
  );
}

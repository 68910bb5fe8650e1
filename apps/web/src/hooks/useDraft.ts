"use client";

import { useCallback, useEffect, useRef, useState } from "react";

const PREFIX = "chatcore.web.v1.draft.";

function storage(): Storage | null {
  try {
    return typeof window !== "undefined" ? window.localStorage : null;
  } catch {
    return null;
  }
}

/**
 * The text being typed, per conversation, kept in localStorage so a reload (or a crash of
 * the tab) does not lose a half-written message. Read and written only inside effects.
 */
export function useDraft(key: string): [string, (text: string) => void] {
  const [text, setText] = useState("");
  const keyRef = useRef(key);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const pending = useRef<{ key: string; text: string } | null>(null);

  const write = useCallback(() => {
    if (timer.current !== null) clearTimeout(timer.current);
    timer.current = null;
    const job = pending.current;
    pending.current = null;
    const store = storage();
    if (!job || !store) return;
    try {
      if (job.text) store.setItem(PREFIX + job.key, job.text);
      else store.removeItem(PREFIX + job.key);
    } catch {
      // storage full or unavailable: the draft lives in memory only
    }
  }, []);

  useEffect(() => {
    write(); // the previous conversation's last keystrokes
    keyRef.current = key;
    let saved = "";
    try {
      saved = storage()?.getItem(PREFIX + key) ?? "";
    } catch {
      saved = "";
    }
    setText(saved);
  }, [key, write]);

  useEffect(() => write, [write]);

  const update = useCallback(
    (next: string) => {
      setText(next);
      pending.current = { key: keyRef.current, text: next };
      if (next === "") write();
      else if (timer.current === null) timer.current = setTimeout(write, 300);
    },
    [write],
  );

  return [text, update];
}

/** Forget the draft of a conversation (it was deleted). */
export function forgetDraft(key: string): void {
  try {
    storage()?.removeItem(PREFIX + key);
  } catch {
    // storage unavailable: nothing kept
  }
}

/** Forget every draft (the user deleted all their chats). */
export function forgetAllDrafts(): void {
  const store = storage();
  if (!store) return;
  try {
    const keys: string[] = [];
    for (let i = 0; i < store.length; i++) {
      const key = store.key(i);
      if (key?.startsWith(PREFIX)) keys.push(key);
    }
    for (const key of keys) store.removeItem(key);
  } catch {
    // storage unavailable: nothing kept
  }
}

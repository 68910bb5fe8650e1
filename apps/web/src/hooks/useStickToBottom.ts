"use client";

import { useCallback, useEffect, useLayoutEffect, useRef, useState, type RefObject } from "react";

/** How close to the bottom (px) still counts as "at the bottom". */
const NEAR_BOTTOM = 48;

/**
 * Keeps a scroll container pinned to its bottom while content grows, and lets go as soon as
 * the reader scrolls up (so they can read earlier messages while a reply streams). Scrolling
 * back down to the bottom, or `scrollToBottom()`, pins it again.
 */
export function useStickToBottom(
  containerRef: RefObject<HTMLElement | null>,
  contentRef: RefObject<HTMLElement | null>,
  contentVersion: unknown,
): { atBottom: boolean; scrollToBottom: (smooth?: boolean) => void } {
  const stuck = useRef(true);
  const lastTop = useRef(0);
  const [atBottom, setAtBottom] = useState(true);

  const pin = useCallback(() => {
    const el = containerRef.current;
    if (!el || !stuck.current) return;
    el.scrollTop = el.scrollHeight;
    lastTop.current = el.scrollTop;
  }, [containerRef]);

  const scrollToBottom = useCallback(
    (smooth = false) => {
      const el = containerRef.current;
      stuck.current = true;
      setAtBottom(true);
      if (!el) return;
      if (smooth && typeof el.scrollTo === "function") el.scrollTo({ top: el.scrollHeight, behavior: "smooth" });
      else el.scrollTop = el.scrollHeight;
    },
    [containerRef],
  );

  useEffect(() => {
    const el = containerRef.current;
    if (!el) return;
    const onScroll = () => {
      const distance = el.scrollHeight - el.scrollTop - el.clientHeight;
      const movedUp = el.scrollTop < lastTop.current - 2;
      lastTop.current = el.scrollTop;
      if (distance <= NEAR_BOTTOM) stuck.current = true;
      else if (movedUp) stuck.current = false;
      setAtBottom(distance <= NEAR_BOTTOM);
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => el.removeEventListener("scroll", onScroll);
  }, [containerRef]);

  // Content grew (a new message, a token, a highlighted block): follow it if pinned.
  useLayoutEffect(pin, [pin, contentVersion]);

  useEffect(() => {
    const content = contentRef.current;
    if (!content || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(pin);
    observer.observe(content);
    return () => observer.disconnect();
  }, [contentRef, pin]);

  return { atBottom, scrollToBottom };
}

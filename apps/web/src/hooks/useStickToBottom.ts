"use client";

import { useCallback, useEffect, useLayoutEffect, useRef, useState, type RefObject } from "react";

/** How close to the bottom (px) still counts as "at the bottom". */
const NEAR_BOTTOM = 48;

/**
 * Keeps a scroll container pinned to its bottom while content grows, and lets go as soon as
 * the reader scrolls up (so they can read earlier messages while a reply streams). Scrolling
 * back down to the bottom, or `scrollToBottom()`, pins it again; so does a new `resetKey`
 * (another conversation).
 *
 * Scroll events arrive a frame late, so a token that lands between the reader's scroll and
 * its event must not yank the view back: before pinning, a position above the one we last
 * set means the reader moved, and we let go instead. Wheel and touch gestures upwards let go
 * at once.
 */
export function useStickToBottom(
  containerRef: RefObject<HTMLElement | null>,
  contentRef: RefObject<HTMLElement | null>,
  contentVersion: unknown,
  resetKey: unknown,
): { atBottom: boolean; scrollToBottom: () => void } {
  const stuck = useRef(true);
  /** Where we last put the view (or saw it), to tell the reader's moves from ours. */
  const lastTop = useRef(0);
  const [atBottom, setAtBottom] = useState(true);

  const letGo = useCallback(() => {
    stuck.current = false;
    setAtBottom(false);
  }, []);

  const pin = useCallback(() => {
    const el = containerRef.current;
    if (!el || !stuck.current) return;
    if (el.scrollTop < lastTop.current - 2) {
      letGo();
      return;
    }
    el.scrollTop = el.scrollHeight;
    lastTop.current = el.scrollTop;
  }, [containerRef, letGo]);

  // An instant jump: a smooth scroll would be overtaken by the tokens still arriving.
  const scrollToBottom = useCallback(() => {
    const el = containerRef.current;
    stuck.current = true;
    setAtBottom(true);
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    lastTop.current = el.scrollTop;
  }, [containerRef]);

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
    const onWheel = (event: WheelEvent) => {
      if (event.deltaY < 0) letGo();
    };
    let touchY = 0;
    const onTouchStart = (event: TouchEvent) => {
      touchY = event.touches[0]?.clientY ?? 0;
    };
    const onTouchMove = (event: TouchEvent) => {
      if ((event.touches[0]?.clientY ?? 0) > touchY) letGo(); // finger down: content up
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    el.addEventListener("wheel", onWheel, { passive: true });
    el.addEventListener("touchstart", onTouchStart, { passive: true });
    el.addEventListener("touchmove", onTouchMove, { passive: true });
    return () => {
      el.removeEventListener("scroll", onScroll);
      el.removeEventListener("wheel", onWheel);
      el.removeEventListener("touchstart", onTouchStart);
      el.removeEventListener("touchmove", onTouchMove);
    };
  }, [containerRef, letGo]);

  // Another conversation: start at its bottom.
  useLayoutEffect(() => {
    stuck.current = true;
    lastTop.current = 0;
    setAtBottom(true);
  }, [resetKey]);

  // Content grew (a new message, a token, a highlighted block): follow it if pinned.
  useLayoutEffect(pin, [pin, contentVersion, resetKey]);

  useEffect(() => {
    const content = contentRef.current;
    if (!content || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(pin);
    observer.observe(content);
    return () => observer.disconnect();
  }, [contentRef, pin]);

  return { atBottom, scrollToBottom };
}

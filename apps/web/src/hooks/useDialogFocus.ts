"use client";

import { useEffect, useRef, type KeyboardEvent, type RefObject } from "react";

const FOCUSABLE = 'button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])';

/**
 * Focus for a modal dialog: `initial` gets the focus when it opens, Tab and Shift+Tab stay
 * inside it, and when it closes the focus goes back to what had it before, or to
 * `fallback()` when that is gone (the dialog deleted it). Returns the dialog's keydown handler
 * (Escape calls `onEscape`).
 */
export function useDialogFocus(
  dialog: RefObject<HTMLElement | null>,
  initial: RefObject<HTMLElement | null>,
  onEscape: () => void,
  fallback: () => HTMLElement | null = () => null,
): (event: KeyboardEvent<HTMLElement>) => void {
  const fallbackRef = useRef(fallback);
  fallbackRef.current = fallback;

  useEffect(() => {
    const active = document.activeElement;
    // (The control that opened it may be gone already, a menu item for one: then nothing had it.)
    const previous = active instanceof HTMLElement && active !== document.body ? active : null;
    initial.current?.focus();
    return () => {
      // After the dialog is gone and whatever it did is on screen.
      setTimeout(() => {
        const target = previous && previous.isConnected ? previous : fallbackRef.current();
        target?.focus();
      }, 0);
    };
  }, [initial]);

  return (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      onEscape();
      return;
    }
    if (event.key !== "Tab" || !dialog.current) return;
    const items = Array.from(dialog.current.querySelectorAll<HTMLElement>(FOCUSABLE)).filter((el) => !el.hasAttribute("disabled"));
    if (items.length === 0) return;
    const first = items[0]!;
    const last = items[items.length - 1]!;
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  };
}

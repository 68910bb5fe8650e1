"use client";

/**
 * Shown between a `reply_started` and the reply's terminal (or abandoned) event: it follows
 * the server's events only, never a timer, so it cannot get stuck on after a reload.
 */
export function TypingIndicator({ active, model }: { active: boolean; model: string }) {
  if (!active) return null;
  return (
    <div className="typing" data-testid="typing-indicator">
      <span className="typing-dots" aria-hidden="true">
        <span />
        <span />
        <span />
      </span>
      <span>{model} is writing…</span>
    </div>
  );
}

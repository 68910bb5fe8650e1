"use client";

import { useId, useRef, type FormEvent, type KeyboardEvent } from "react";
import { useDraft } from "@/hooks/useDraft";
import { messageLength } from "@/lib/limits";

export interface MessageInputProps {
  /** Whose draft this is (the conversation): kept across reloads. */
  draftKey: string;
  /** Why sending is not possible right now (shown to the user), or null. */
  blockedReason: string | null;
  /** A hint that does not block sending (e.g. "offline: it will be sent later"). */
  hint: string | null;
  /** The server's `limits.max_message_chars`, counted as it counts them (code points). */
  maxChars: number;
  /** Returns whether the message was accepted (queued). */
  onSend(text: string): boolean;
  /** Present while a reply is pending: the Stop button. */
  stop: { onStop(): void; disabledReason: string | null; requested: boolean } | null;
}

/** The composer's text field (one per page): where the focus goes after "delete all my chats". */
export const MESSAGE_INPUT_ID = "message-input";

/** Enter sends, Shift+Enter adds a line. The counter appears near the limit. */
export function MessageInput({ draftKey, blockedReason, hint, maxChars, onSend, stop }: MessageInputProps) {
  const [text, setText] = useDraft(draftKey);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const statusId = useId();
  const length = messageLength(text);
  const tooLong = length > maxChars;
  const nearLimit = length >= maxChars * 0.8;
  const empty = text.trim().length === 0;
  const over = length - maxChars;
  const reason =
    blockedReason ??
    (tooLong ? `Too long by ${over} character${over === 1 ? "" : "s"}: at most ${maxChars} can be sent.` : null);
  const canSend = reason === null && !empty;

  const submit = () => {
    if (!canSend) return;
    if (onSend(text)) {
      setText("");
      textarea.current?.focus();
    }
  };

  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    submit();
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  };

  return (
    <form className="composer" onSubmit={onSubmit} aria-label="Send a message">
      <div className="composer-row">
        <label htmlFor={MESSAGE_INPUT_ID} className="sr-only">
          Message
        </label>
        <textarea
          id={MESSAGE_INPUT_ID}
          ref={textarea}
          className="composer-input"
          value={text}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={onKeyDown}
          rows={Math.min(8, Math.max(1, text.split("\n").length))}
          placeholder="Write a message…"
          aria-describedby={`${statusId}-status`}
          aria-invalid={tooLong}
        />
        {stop ? (
          <button
            type="button"
            className="btn btn-stop"
            onClick={stop.onStop}
            disabled={stop.disabledReason !== null || stop.requested}
            title={stop.disabledReason ?? "Stop the reply"}
          >
            {stop.requested ? "Stopping…" : "Stop"}
          </button>
        ) : null}
        <button type="submit" className="btn btn-primary" disabled={!canSend} aria-disabled={!canSend}>
          Send
        </button>
      </div>
      <div className="composer-status" id={`${statusId}-status`}>
        <span className={reason ? "composer-reason" : "composer-hint"} data-testid="composer-reason">
          {reason ?? hint ?? "Enter sends · Shift+Enter adds a line"}
        </span>
        {nearLimit && (
          <span className={`counter${tooLong ? " counter-over" : ""}`} data-testid="char-counter">
            {length} / {maxChars}
          </span>
        )}
      </div>
    </form>
  );
}

"use client";

import { useEffect, useId, useRef, useState, type KeyboardEvent } from "react";
import { messageLength } from "@/lib/limits";

export interface MessageEditorProps {
  initialText: string;
  maxChars: number;
  /** Sending (the request is on its way), or the reason it was refused, if it was. */
  sending: boolean;
  error: string | null;
  /** Why it cannot be sent now (the conversation is answering, no connection), or null. */
  blockedReason: string | null;
  onSend(text: string): void;
  onCancel(): void;
}

/** Edit a message in place: Ctrl/Cmd+Enter or "Send" sends the new version, Escape or "Cancel"
 * leaves it as it was. Enter alone adds a line. */
export function MessageEditor({ initialText, maxChars, sending, error, blockedReason, onSend, onCancel }: MessageEditorProps) {
  const [text, setText] = useState(initialText);
  const area = useRef<HTMLTextAreaElement>(null);
  const id = useId();
  const length = messageLength(text);
  const tooLong = length > maxChars;
  const unchanged = text.trim() === initialText.trim();
  const reason = sending
    ? "Sending…"
    : (blockedReason ?? (tooLong ? `Too long by ${length - maxChars}: at most ${maxChars} characters.` : null));
  const canSend = reason === null && text.trim() !== "" && !unchanged;

  useEffect(() => {
    const el = area.current;
    if (!el) return;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
  }, []);

  const send = () => {
    if (canSend) onSend(text);
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Escape") {
      event.preventDefault();
      onCancel();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.nativeEvent.isComposing) {
      event.preventDefault();
      send();
    }
  };

  return (
    <div className="msg-editor" data-testid="message-editor">
      <label htmlFor={`${id}-text`} className="sr-only">
        Edit your message
      </label>
      <textarea
        id={`${id}-text`}
        ref={area}
        className="composer-input msg-editor-input"
        value={text}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
        rows={Math.min(10, Math.max(2, text.split("\n").length))}
        aria-describedby={`${id}-status`}
        aria-invalid={tooLong || error !== null}
        readOnly={sending}
      />
      <div className="msg-editor-bar">
        <span id={`${id}-status`} className={error ? "msg-editor-error" : "msg-editor-hint"} role={error ? "alert" : undefined}>
          {error ?? reason ?? "Ctrl+Enter sends a new version · Escape cancels"}
        </span>
        <span className="msg-actions">
          <button type="button" className="btn btn-small btn-ghost" onClick={onCancel}>
            Cancel
          </button>
          <button type="button" className="btn btn-small btn-primary" onClick={send} disabled={!canSend}>
            Send
          </button>
        </span>
      </div>
    </div>
  );
}

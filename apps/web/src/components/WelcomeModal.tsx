"use client";

import { useEffect, useId, useRef, useState, type KeyboardEvent } from "react";

export interface WelcomeModalProps {
  /** The model that answers (from the server's `welcome`), once known. */
  model: string | null;
  initialName: string | null;
  onStart(name: string | null): void;
  onClose(): void;
}

const FOCUSABLE = 'button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])';

/** First visit: what this is, who answers, and an optional name for the assistant to use. */
export function WelcomeModal({ model, initialName, onStart, onClose }: WelcomeModalProps) {
  const [name, setName] = useState(initialName ?? "");
  const dialog = useRef<HTMLDivElement>(null);
  const input = useRef<HTMLInputElement>(null);
  const titleId = useId();
  const descId = useId();

  useEffect(() => {
    const previous = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    input.current?.focus();
    return () => previous?.focus();
  }, []);

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    if (event.key === "Escape") {
      event.preventDefault();
      onClose();
      return;
    }
    if (event.key !== "Tab" || !dialog.current) return;
    // Keep keyboard focus inside the dialog while it is open.
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

  return (
    <div className="modal-backdrop">
      <div
        className="modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        aria-describedby={descId}
        ref={dialog}
        onKeyDown={onKeyDown}
        data-testid="welcome-modal"
      >
        <h2 id={titleId}>Welcome to chatcore</h2>
        <div id={descId}>
          <p>
            A chat assistant that never loses a message: replies stream in as they are written, and your conversation survives
            reloads, lost connections and server restarts.
          </p>
          <p className="model-line">
            Answering today: <strong data-testid="welcome-model">{model ?? "connecting…"}</strong>
          </p>
        </div>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            onStart(name.trim() || null);
          }}
        >
          <label htmlFor={`${titleId}-name`}>What should the assistant call you? (optional)</label>
          <input
            id={`${titleId}-name`}
            ref={input}
            className="text-input"
            value={name}
            maxLength={80}
            autoComplete="given-name"
            onChange={(e) => setName(e.target.value)}
            placeholder="Your name"
          />
          <div className="modal-actions">
            <button type="button" className="btn btn-ghost" onClick={onClose}>
              Skip
            </button>
            <button type="submit" className="btn btn-primary">
              Start chatting
            </button>
          </div>
        </form>
      </div>
    </div>
  );
}

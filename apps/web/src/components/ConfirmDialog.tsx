"use client";

import { useId, useRef, type ReactNode } from "react";
import { useDialogFocus } from "@/hooks/useDialogFocus";

export interface ConfirmDialogProps {
  title: string;
  children: ReactNode;
  /** The button that does it ("Delete"); destructive, so the focus starts on Cancel. */
  confirmLabel: string;
  onConfirm(): void;
  onCancel(): void;
  /** Where the focus goes when the dialog closes and what had it before is gone. */
  fallbackFocus?: () => HTMLElement | null;
}

/** Asks before something that cannot be undone. Escape or Cancel leaves everything as it was. */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onCancel, fallbackFocus }: ConfirmDialogProps) {
  const dialog = useRef<HTMLDivElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  const titleId = useId();
  const descId = useId();
  const onKeyDown = useDialogFocus(dialog, cancel, onCancel, fallbackFocus);

  return (
    <div className="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && onCancel()}>
      <div
        className="modal modal-confirm"
        role="alertdialog"
        aria-modal="true"
        aria-labelledby={titleId}
        aria-describedby={descId}
        ref={dialog}
        onKeyDown={onKeyDown}
        data-testid="confirm-dialog"
      >
        <h2 id={titleId}>{title}</h2>
        <div id={descId}>{children}</div>
        <div className="modal-actions">
          <button type="button" className="btn btn-ghost" ref={cancel} onClick={onCancel}>
            Cancel
          </button>
          <button type="button" className="btn btn-danger" onClick={onConfirm}>
            {confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}

"use client";

import { memo } from "react";

export interface VersionSwitcherProps {
  /** 1-based position among the versions, and how many there are. */
  index: number;
  count: number;
  previous: string | null;
  next: string | null;
  /** "message" or "reply": what the versions are of, for screen readers. */
  what: string;
  /** Why switching is not possible now, or null. */
  disabledReason: string | null;
  onSelect(messageId: string): void;
}

/** `< 2 / 3 >`: step between the versions of a message (edits) or of a reply (regenerations). */
export const VersionSwitcher = memo(function VersionSwitcher({
  index,
  count,
  previous,
  next,
  what,
  disabledReason,
  onSelect,
}: VersionSwitcherProps) {
  const blocked = disabledReason !== null;
  return (
    <div className="versions" role="group" aria-label={`Versions of this ${what}`} data-testid="version-switcher" data-version={`${index}/${count}`}>
      <button
        type="button"
        className="btn btn-small btn-ghost btn-icon"
        aria-label={`Previous version of this ${what}`}
        title={disabledReason ?? "Previous version"}
        disabled={previous === null || blocked}
        onClick={() => previous && onSelect(previous)}
      >
        <span aria-hidden="true">‹</span>
      </button>
      <span className="versions-count">
        <span className="sr-only">Version </span>
        {index}
        <span aria-hidden="true"> / </span>
        <span className="sr-only"> of </span>
        {count}
      </span>
      <button
        type="button"
        className="btn btn-small btn-ghost btn-icon"
        aria-label={`Next version of this ${what}`}
        title={disabledReason ?? "Next version"}
        disabled={next === null || blocked}
        onClick={() => next && onSelect(next)}
      >
        <span aria-hidden="true">›</span>
      </button>
    </div>
  );
});

"use client";

import { memo } from "react";

export interface ConversationSummary {
  id: string;
  title: string;
  busy: boolean;
}

export interface ConversationListProps {
  conversations: ConversationSummary[];
  activeId: string | null;
  onSelect(id: string): void;
  onNew(): void;
  /** Why a new conversation cannot be started now, or null. */
  newDisabledReason: string | null;
}

/** The session's conversations, newest first; titles come from the server's events. */
export const ConversationList = memo(function ConversationList({
  conversations,
  activeId,
  onSelect,
  onNew,
  newDisabledReason,
}: ConversationListProps) {
  return (
    <nav className="conversations" aria-label="Conversations">
      <button
        type="button"
        className="btn btn-primary btn-block"
        onClick={onNew}
        disabled={newDisabledReason !== null}
        title={newDisabledReason ?? "Start a new conversation"}
      >
        + New chat
      </button>
      {newDisabledReason && <p className="sidebar-note">{newDisabledReason}</p>}
      <ul>
        {[...conversations].reverse().map((c) => (
          <li key={c.id}>
            <button
              type="button"
              className={`conv-item${c.id === activeId ? " conv-active" : ""}`}
              aria-current={c.id === activeId ? "page" : undefined}
              onClick={() => onSelect(c.id)}
            >
              <span className="conv-title">{c.title}</span>
              {c.busy && <span className="conv-busy" role="img" aria-label="replying" title="A reply is in progress" />}
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
});

"use client";

import { memo, useEffect, useRef, useState, type KeyboardEvent } from "react";
import { EXPORT_LABELS, type ExportFormat } from "@/lib/exports";

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
  onRename(id: string, title: string): void;
  onExport(id: string, format: ExportFormat): void;
  /** Asks to delete (the page confirms first). */
  onDelete(id: string): void;
  onDeleteAll(): void;
  /** Why renaming and deleting are not possible now (no connection), or null. */
  changeDisabledReason: string | null;
}

/** The id of a conversation's menu button (the page returns the focus to it). */
export function actionsButtonId(conversationId: string): string {
  return `conv-actions-${conversationId}`;
}

export const NEW_CHAT_BUTTON_ID = "new-chat";

const EXPORTS: ExportFormat[] = ["markdown", "json", "json-tree"];

interface MenuProps {
  summary: ConversationSummary;
  changeDisabledReason: string | null;
  onRename(): void;
  onExport(format: ExportFormat): void;
  onDelete(): void;
  onClose(focusButton: boolean): void;
}

/** A conversation's menu: arrow keys move, Escape closes it (back to its button), a click
 * outside closes it. */
function ConversationMenu({ summary, changeDisabledReason, onRename, onExport, onDelete, onClose }: MenuProps) {
  const menu = useRef<HTMLUListElement>(null);

  const items = () => Array.from(menu.current?.querySelectorAll<HTMLButtonElement>('[role="menuitem"]:not([disabled])') ?? []);

  useEffect(() => {
    items()[0]?.focus();
    const onPointer = (event: MouseEvent) => {
      if (menu.current && !menu.current.contains(event.target as Node)) onClose(false);
    };
    document.addEventListener("mousedown", onPointer);
    return () => document.removeEventListener("mousedown", onPointer);
    // Once per opening: the menu is mounted when it opens.
  }, []);

  const onKeyDown = (event: KeyboardEvent<HTMLUListElement>) => {
    const list = items();
    const at = list.indexOf(document.activeElement as HTMLButtonElement);
    const move = (to: number) => {
      event.preventDefault();
      list[(to + list.length) % list.length]?.focus();
    };
    switch (event.key) {
      case "ArrowDown":
        return move(at + 1);
      case "ArrowUp":
        return move(at - 1);
      case "Home":
        return move(0);
      case "End":
        return move(list.length - 1);
      case "Escape":
        event.preventDefault();
        return onClose(true);
      case "Tab":
        return onClose(false);
      default:
        return;
    }
  };

  const item = (label: string, action: () => void, options: { disabled?: string | null; danger?: boolean } = {}) => (
    <li role="none">
      <button
        type="button"
        role="menuitem"
        className={`menu-item${options.danger ? " menu-item-danger" : ""}`}
        disabled={options.disabled != null}
        title={options.disabled ?? undefined}
        onClick={() => {
          onClose(false);
          action();
        }}
      >
        {label}
      </button>
    </li>
  );

  return (
    <ul className="menu" role="menu" aria-label={`Actions for ${summary.title}`} ref={menu} onKeyDown={onKeyDown}>
      {item("Rename", onRename, { disabled: changeDisabledReason })}
      {EXPORTS.map((format) => (
        <li role="none" key={format}>
          <button
            type="button"
            role="menuitem"
            className="menu-item"
            onClick={() => {
              onClose(true);
              onExport(format);
            }}
          >
            {EXPORT_LABELS[format]}
          </button>
        </li>
      ))}
      {item("Delete…", onDelete, { disabled: changeDisabledReason, danger: true })}
    </ul>
  );
}

interface RenameProps {
  title: string;
  onDone(title: string | null): void;
}

/** The title, editable in place: Enter (or leaving the field) saves, Escape keeps the old one. */
function RenameField({ title, onDone }: RenameProps) {
  const [value, setValue] = useState(title);
  const input = useRef<HTMLInputElement>(null);
  const done = useRef(false);

  useEffect(() => {
    input.current?.focus();
    input.current?.select();
  }, []);

  const finish = (result: string | null) => {
    if (done.current) return;
    done.current = true;
    onDone(result);
  };

  return (
    <input
      ref={input}
      className="text-input conv-rename"
      aria-label="New name of the conversation"
      value={value}
      maxLength={200}
      onChange={(e) => setValue(e.target.value)}
      onKeyDown={(e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          finish(value);
        } else if (e.key === "Escape") {
          e.preventDefault();
          finish(null);
        }
      }}
      onBlur={() => finish(value)}
    />
  );
}

/** The session's conversations, newest first; titles come from the server's events. */
export const ConversationList = memo(function ConversationList({
  conversations,
  activeId,
  onSelect,
  onNew,
  newDisabledReason,
  onRename,
  onExport,
  onDelete,
  onDeleteAll,
  changeDisabledReason,
}: ConversationListProps) {
  const [menuFor, setMenuFor] = useState<string | null>(null);
  const [renaming, setRenaming] = useState<string | null>(null);

  const focusLater = (id: string) => setTimeout(() => document.getElementById(id)?.focus(), 0);

  const startRename = (id: string) => {
    if (changeDisabledReason !== null) return;
    setMenuFor(null);
    setRenaming(id);
  };

  return (
    <nav className="conversations" aria-label="Conversations">
      <button
        type="button"
        id={NEW_CHAT_BUTTON_ID}
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
          <li key={c.id} className="conv-row" data-testid="conversation">
            {renaming === c.id ? (
              <RenameField
                title={c.title}
                onDone={(title) => {
                  setRenaming(null);
                  if (title !== null && title.trim() && title.trim() !== c.title) onRename(c.id, title);
                  focusLater(`conv-${c.id}`);
                }}
              />
            ) : (
              <button
                type="button"
                id={`conv-${c.id}`}
                className={`conv-item${c.id === activeId ? " conv-active" : ""}`}
                aria-current={c.id === activeId ? "page" : undefined}
                onClick={() => onSelect(c.id)}
                onDoubleClick={() => startRename(c.id)}
                onKeyDown={(e) => {
                  if (e.key === "F2") {
                    e.preventDefault();
                    startRename(c.id);
                  }
                }}
                title="Double-click (or F2) to rename"
              >
                <span className="conv-title">{c.title}</span>
                {c.busy && <span className="conv-busy" role="img" aria-label="replying" title="A reply is in progress" />}
              </button>
            )}
            <button
              type="button"
              id={actionsButtonId(c.id)}
              className="btn btn-small btn-ghost btn-icon conv-actions"
              aria-label={`Actions for ${c.title}`}
              aria-haspopup="menu"
              aria-expanded={menuFor === c.id}
              onClick={() => setMenuFor((open) => (open === c.id ? null : c.id))}
            >
              <span aria-hidden="true">⋯</span>
            </button>
            {menuFor === c.id && (
              <ConversationMenu
                summary={c}
                changeDisabledReason={changeDisabledReason}
                onRename={() => startRename(c.id)}
                onExport={(format) => onExport(c.id, format)}
                onDelete={() => onDelete(c.id)}
                onClose={(focusButton) => {
                  setMenuFor(null);
                  if (focusButton) focusLater(actionsButtonId(c.id));
                }}
              />
            )}
          </li>
        ))}
      </ul>
      <div className="sidebar-footer">
        <button
          type="button"
          className="btn btn-small btn-ghost btn-danger-text"
          onClick={onDeleteAll}
          disabled={changeDisabledReason !== null}
          title={changeDisabledReason ?? "Delete every conversation of this session, for good"}
        >
          Delete all my chats…
        </button>
      </div>
    </nav>
  );
});

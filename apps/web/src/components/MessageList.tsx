"use client";

import { memo, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import type { ChatMessage, Conversation, OutboxEntry, PendingCommand } from "@/lib/chatTypes";
import { formatFullTime, formatTime } from "@/lib/format";
import { versionsOnPath, type Versions } from "@/lib/selectors";
import { useStickToBottom } from "@/hooks/useStickToBottom";
import { CopyButton } from "./CopyButton";
import { Markdown } from "./Markdown";
import { MessageEditor } from "./MessageEditor";
import { VersionSwitcher } from "./VersionSwitcher";

function Timestamp({ at }: { at: string }) {
  return (
    <time dateTime={at} title={formatFullTime(at)} className="msg-time">
      {formatTime(at)}
    </time>
  );
}

function authorOf(message: ChatMessage, fallbackModel: string): string {
  if (message.role === "user") return "You";
  return message.models[message.models.length - 1] ?? fallbackModel;
}

/** What a finished message's buttons ask for (stable: rows are memoised). */
export interface MessageActions {
  /** Sends a new version of a user message; returns whether it went out. */
  onEdit(messageId: string, text: string): boolean;
  /** The editor of `messageId` was closed without sending (its refused command is dropped). */
  onEditClosed(messageId: string): void;
  /** Answers the user message `inReplyTo` again. */
  onRegenerate(inReplyTo: string): void;
  onSelectVersion(messageId: string): void;
}

/** What the list adds for its rows: a row that held the focus is going away. */
interface RowActions extends MessageActions {
  onFocusedRowRemoved(): void;
}

export interface MessageRowProps {
  message: ChatMessage;
  model: string;
  /** Where it stands among its versions (0 when it has none). */
  versionIndex: number;
  versionCount: number;
  previousVersion: string | null;
  nextVersion: string | null;
  /** Why it cannot be edited, answered again or switched now, or null. */
  shapingBlocked: string | null;
  /** The edit of this message on its way, or refused. */
  editCommand: PendingCommand | null;
  maxChars: number;
  actions: RowActions;
}

/** One finished message. Memoised on its props (the message object is immutable): streaming
 * elsewhere skips it. */
export const MessageRow = memo(function MessageRow({
  message,
  model,
  versionIndex,
  versionCount,
  previousVersion,
  nextVersion,
  shapingBlocked,
  editCommand,
  maxChars,
  actions,
}: MessageRowProps) {
  const status = message.role === "assistant" ? message.status : "complete";
  // "editing": the editor is open; "sent": its text went out (the editor then shows while the
  // command waits or was refused, and closes when it is acknowledged).
  const [editor, setEditor] = useState<"closed" | "editing" | "sent">("closed");
  const editButton = useRef<HTMLButtonElement>(null);
  const row = useRef<HTMLLIElement>(null);
  const isUser = message.role === "user";

  // Runs while the row is still in the document: if it holds the focus (its editor, a version
  // button), the list takes it over once the new path is shown.
  useLayoutEffect(() => {
    const element = row.current;
    return () => {
      if (element?.contains(document.activeElement)) actions.onFocusedRowRemoved();
    };
  }, [actions]);
  const what = isUser ? "message" : "reply";
  const showEditor = isUser && (editCommand !== null || editor === "editing");

  const closeEditor = () => {
    setEditor("closed");
    actions.onEditClosed(message.id);
    // Back to where the edit started (once the button is rendered again).
    setTimeout(() => editButton.current?.focus(), 0);
  };

  return (
    <li
      ref={row}
      className={`msg msg-${message.role} msg-${status}`}
      data-testid="message"
      data-role={message.role}
      data-status={status}
    >
      <div className="msg-meta">
        <span className="msg-author">{authorOf(message, model)}</span>
        <Timestamp at={message.at} />
        {status === "cancelled" && <span className="badge badge-muted">Stopped</span>}
        {status === "failed" && <span className="badge badge-error">Failed</span>}
      </div>
      {showEditor ? (
        <MessageEditor
          initialText={editCommand?.text ?? message.text}
          maxChars={maxChars}
          sending={editCommand !== null && editCommand.error === null}
          error={editCommand?.error?.message ?? null}
          blockedReason={editCommand?.error ? null : shapingBlocked}
          onSend={(text) => {
            if (actions.onEdit(message.id, text)) setEditor("sent");
          }}
          onCancel={closeEditor}
        />
      ) : (
        <div className="msg-body">
          {isUser ? <p className="plain">{message.text}</p> : message.text ? <Markdown text={message.text} /> : null}
          {status === "failed" && (
            <p className="msg-error" role="note">
              The reply could not be completed: {message.error ?? "unknown error"}
            </p>
          )}
          {status === "cancelled" && !message.text && <p className="msg-note">Stopped before any text arrived.</p>}
          {message.role === "assistant" && message.models.length > 1 && (
            <p className="msg-note">
              Started by {message.models[0]}, finished by {message.models[message.models.length - 1]} after the first model failed.
            </p>
          )}
        </div>
      )}
      <div className="msg-tools">
        {versionCount > 1 && (
          <VersionSwitcher
            index={versionIndex}
            count={versionCount}
            previous={previousVersion}
            next={nextVersion}
            what={what}
            disabledReason={shapingBlocked}
            onSelect={actions.onSelectVersion}
          />
        )}
        {isUser && !showEditor && (
          <button
            type="button"
            ref={editButton}
            className="btn btn-small btn-ghost"
            aria-label="Edit message"
            title={shapingBlocked ?? "Edit this message: the new version gets a new answer"}
            disabled={shapingBlocked !== null}
            onClick={() => setEditor("editing")}
          >
            Edit
          </button>
        )}
        {!isUser && message.inReplyTo !== null && (
          <button
            type="button"
            className="btn btn-small btn-ghost"
            aria-label="Regenerate reply"
            title={shapingBlocked ?? "Answer again: this reply is kept as another version"}
            disabled={shapingBlocked !== null}
            onClick={() => actions.onRegenerate(message.inReplyTo!)}
          >
            Regenerate
          </button>
        )}
        {message.text && <CopyButton text={message.text} label={isUser ? "Copy message" : "Copy reply"} />}
      </div>
    </li>
  );
});

function StreamingRow({ conversation, model }: { conversation: Conversation; model: string }) {
  const turn = conversation.pending;
  if (!turn) return null;
  if (!turn.reply) {
    if (!turn.interrupted) return null;
    return (
      <li className="msg msg-assistant msg-retrying" data-testid="retrying">
        <p className="msg-note">The previous attempt was interrupted ({turn.interrupted}); the reply is being retried…</p>
      </li>
    );
  }
  const author = turn.reply.models[turn.reply.models.length - 1] ?? model;
  return (
    <li className="msg msg-assistant msg-streaming" data-testid="streaming-reply" aria-busy="true">
      <div className="msg-meta">
        <span className="msg-author">{author}</span>
        <Timestamp at={turn.reply.startedAt} />
        {turn.cancelRequested && <span className="badge badge-muted">Stopping…</span>}
      </div>
      <div className="msg-body">
        <Markdown text={turn.reply.text} streaming />
      </div>
    </li>
  );
}

export interface OutboxActions {
  onRetry(clientMessageId: string): void;
  onDiscard(clientMessageId: string): void;
}

const OutboxRow = memo(function OutboxRow({
  entry,
  waitingReason,
  actions,
}: {
  entry: OutboxEntry;
  waitingReason: string;
  actions: OutboxActions;
}) {
  const failed = entry.error !== null;
  return (
    <li className={`msg msg-user msg-pending${failed ? " msg-failed" : ""}`} data-testid="pending-message" data-failed={failed}>
      <div className="msg-meta">
        <span className="msg-author">You</span>
        <Timestamp at={entry.createdAt} />
        <span className={`badge ${failed ? "badge-error" : "badge-muted"}`}>{failed ? "Not sent" : "Pending"}</span>
      </div>
      <div className="msg-body">
        <p className="plain">{entry.text}</p>
        {failed ? (
          <div className="msg-error" role="note">
            <span>{entry.error!.message}</span>
            <span className="msg-actions">
              <button type="button" className="btn btn-small" onClick={() => actions.onRetry(entry.clientMessageId)}>
                Try again
              </button>
              <button type="button" className="btn btn-small btn-ghost" onClick={() => actions.onDiscard(entry.clientMessageId)}>
                Discard
              </button>
            </span>
          </div>
        ) : (
          <p className="msg-note">{waitingReason}</p>
        )}
      </div>
    </li>
  );
});

export interface MessageListProps {
  conversation: Conversation | null;
  outbox: OutboxEntry[];
  model: string;
  waitingReason: string;
  actions: OutboxActions;
  messageActions: MessageActions;
  /** Why edits, regenerations and switches are not possible now, or null. */
  shapingBlocked: string | null;
  /** The edits on their way or refused, by the message they edit. */
  edits: ReadonlyMap<string, PendingCommand>;
  maxChars: number;
}

const NO_VERSIONS: Versions = { index: 0, count: 0, previous: null, next: null };

export function MessageList({
  conversation,
  outbox,
  model,
  waitingReason,
  actions,
  messageActions,
  shapingBlocked,
  edits,
  maxChars,
}: MessageListProps) {
  const scrollRef = useRef<HTMLDivElement>(null);
  const contentRef = useRef<HTMLOListElement>(null);
  const draftLength = conversation?.pending?.reply?.text.length ?? -1;
  const version = `${conversation?.id}:${conversation?.messages.length}:${outbox.length}:${draftLength}`;
  const { atBottom, scrollToBottom } = useStickToBottom(scrollRef, contentRef, version, conversation?.id);
  const empty = (conversation?.messages.length ?? 0) === 0 && outbox.length === 0 && !conversation?.pending;
  // Recomputed only when the path or the other versions change, not per streamed token.
  const messages = conversation?.messages;
  const branches = conversation?.branches;
  const versions = useMemo(
    () => (messages && branches ? versionsOnPath({ messages, branches }) : new Map<string, Versions>()),
    [messages, branches],
  );

  // A row that had the focus (its editor, a version button) is replaced when the path
  // changes: the focus then goes to the messages, not back to the top of the page.
  const refocus = useRef(false);
  const rowActions = useMemo<RowActions>(
    () => ({ ...messageActions, onFocusedRowRemoved: () => void (refocus.current = true) }),
    [messageActions],
  );
  useEffect(() => {
    if (!refocus.current) return;
    refocus.current = false;
    const active = document.activeElement;
    if (active === null || active === document.body) scrollRef.current?.focus({ preventScroll: true });
  });

  return (
    <div className="message-scroll" ref={scrollRef} tabIndex={0} aria-label="Messages" role="region">
      {empty && (
        <div className="empty-state">
          <p className="empty-title">Ask anything.</p>
          <p>Replies stream in as they are written. Your conversation is kept on this device, and it survives reloads and lost connections.</p>
        </div>
      )}
      <ol className="message-list" ref={contentRef}>
        {conversation?.messages.map((m) => {
          const v = versions.get(m.id) ?? NO_VERSIONS;
          return (
            <MessageRow
              key={m.id}
              message={m}
              model={model}
              versionIndex={v.index}
              versionCount={v.count}
              previousVersion={v.previous}
              nextVersion={v.next}
              shapingBlocked={shapingBlocked}
              editCommand={edits.get(m.id) ?? null}
              maxChars={maxChars}
              actions={rowActions}
            />
          );
        })}
        {conversation && <StreamingRow conversation={conversation} model={model} />}
        {outbox.map((e) => (
          <OutboxRow key={e.clientMessageId} entry={e} waitingReason={waitingReason} actions={actions} />
        ))}
      </ol>
      {!atBottom && (
        <button type="button" className="btn jump-latest" onClick={scrollToBottom}>
          Jump to latest ↓
        </button>
      )}
    </div>
  );
}

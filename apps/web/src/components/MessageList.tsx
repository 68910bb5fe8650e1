"use client";

import { memo, useRef } from "react";
import type { ChatMessage, Conversation, OutboxEntry } from "@/lib/chatTypes";
import { formatFullTime, formatTime } from "@/lib/format";
import { useStickToBottom } from "@/hooks/useStickToBottom";
import { Markdown } from "./Markdown";

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

/** One finished message. Memoised on the message object: streaming elsewhere skips it. */
export const MessageRow = memo(function MessageRow({ message, model }: { message: ChatMessage; model: string }) {
  const status = message.role === "assistant" ? message.status : "complete";
  return (
    <li className={`msg msg-${message.role} msg-${status}`} data-testid="message" data-role={message.role} data-status={status}>
      <div className="msg-meta">
        <span className="msg-author">{authorOf(message, model)}</span>
        <Timestamp at={message.at} />
        {status === "cancelled" && <span className="badge badge-muted">Stopped</span>}
        {status === "failed" && <span className="badge badge-error">Failed</span>}
      </div>
      <div className="msg-body">
        {message.role === "user" ? <p className="plain">{message.text}</p> : message.text ? <Markdown text={message.text} /> : null}
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
}

export function MessageList({ conversation, outbox, model, waitingReason, actions }: MessageListProps) {
  const scrollRef = useRef<HTMLDivElement>(null);
  const contentRef = useRef<HTMLOListElement>(null);
  const draftLength = conversation?.pending?.reply?.text.length ?? -1;
  const version = `${conversation?.id}:${conversation?.messages.length}:${outbox.length}:${draftLength}`;
  const { atBottom, scrollToBottom } = useStickToBottom(scrollRef, contentRef, version, conversation?.id);
  const empty = (conversation?.messages.length ?? 0) === 0 && outbox.length === 0 && !conversation?.pending;

  return (
    <div className="message-scroll" ref={scrollRef} tabIndex={0} aria-label="Messages" role="region">
      {empty && (
        <div className="empty-state">
          <p className="empty-title">Ask anything.</p>
          <p>Replies stream in as they are written. Your conversation is kept on this device, and it survives reloads and lost connections.</p>
        </div>
      )}
      <ol className="message-list" ref={contentRef}>
        {conversation?.messages.map((m) => <MessageRow key={m.id} message={m} model={model} />)}
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

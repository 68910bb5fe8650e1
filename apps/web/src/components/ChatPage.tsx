"use client";

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useChatState } from "@/hooks/useChatState";
import { forgetAllDrafts, forgetDraft } from "@/hooks/useDraft";
import { useSessionRestore } from "@/hooks/useSessionRestore";
import { useWebSocket, type SocketOverrides } from "@/hooks/useWebSocket";
import { ChatClient } from "@/lib/chatClient";
import type { ChatState, PendingCommand } from "@/lib/chatTypes";
import { saveFile, type ExportFormat } from "@/lib/exports";
import { outboxFor } from "@/lib/outbox";
import { activeConversation, shapingBlockedReason } from "@/lib/selectors";
import type { StorageLike } from "@/lib/storage";
import { ConfirmDialog } from "./ConfirmDialog";
import { ConnectionStatus } from "./ConnectionStatus";
import { actionsButtonId, ConversationList, NEW_CHAT_BUTTON_ID, type ConversationSummary } from "./ConversationList";
import { MESSAGE_INPUT_ID, MessageInput } from "./MessageInput";
import { MessageList, type MessageActions, type OutboxActions } from "./MessageList";
import { TypingIndicator } from "./TypingIndicator";
import { WelcomeModal } from "./WelcomeModal";

/** Used until the server's `welcome` says otherwise. */
const DEFAULT_MAX_CHARS = 8000;

export interface ChatPageProps {
  /** The conversation named in the URL (`?c=`), if any. */
  conversationParam?: string | null;
  /** Called when the shown conversation changes (the route writes it to the URL). */
  onConversationShown?(id: string): void;
  /** Test seams. */
  client?: ChatClient;
  getStorage?: () => StorageLike | null;
  socket?: SocketOverrides;
}

function blockedReason(state: ChatState): string | null {
  if (!state.hydrated) return "Loading your conversation…";
  if (state.connection.kind === "expired") {
    return state.sessionDeleted
      ? "Your chats were deleted: start a new session to keep chatting."
      : "Your session has expired: start a new session to keep chatting.";
  }
  if (state.connection.kind === "incompatible") return "This page is out of date: reload it to keep chatting.";
  const conv = activeConversation(state);
  if (conv?.pending) {
    return conv.pending.cancelRequested
      ? "Stopping the reply…"
      : "The assistant is answering: wait for the reply to finish, or stop it.";
  }
  return null;
}

function sendHint(state: ChatState): string | null {
  switch (state.connection.kind) {
    case "open":
      return null;
    case "offline":
      return "Offline: your message will be kept and sent when you are back online.";
    case "reconnecting":
      return "Not connected: your message will be kept and sent once connected.";
    default:
      return null;
  }
}

function waitingReason(state: ChatState): string {
  const conv = activeConversation(state);
  if (state.connection.kind !== "open") return "Waiting for the connection; it will be sent automatically.";
  if (conv?.pending) return "Queued: it goes out after the current reply.";
  return "Sending…";
}

/** The chat: owns the client (store + socket), and lays out the parts. */
export function ChatPage({ conversationParam = null, onConversationShown, client: given, getStorage, socket }: ChatPageProps) {
  const [client] = useState(() => given ?? new ChatClient());
  const hydrated = useSessionRestore(client, { getStorage });
  useWebSocket(client, hydrated, socket);
  const state = useChatState(client);
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const [welcomeClosed, setWelcomeClosed] = useState(false);

  useEffect(() => () => client.dispose(), [client]);

  // The URL names a conversation: show it (once the saved state is in).
  useEffect(() => {
    if (hydrated && conversationParam) client.selectConversation(conversationParam);
  }, [client, hydrated, conversationParam]);

  const conversation = activeConversation(state);
  const conversationId = conversation?.id ?? null;
  useEffect(() => {
    if (conversationId && conversationId !== conversationParam) onConversationShown?.(conversationId);
    // Only a change of the shown conversation writes the URL.
  }, [conversationId]);

  const model = state.model ?? "Assistant";
  const outbox = useMemo(() => outboxFor(state, conversationId), [state, conversationId]);
  const summaries = useMemo<ConversationSummary[]>(
    () =>
      state.order.flatMap((id) => {
        const c = state.conversations[id];
        return c ? [{ id, title: c.title, busy: c.pending !== null }] : [];
      }),
    [state.order, state.conversations],
  );

  const actions = useMemo<OutboxActions>(
    () => ({
      onRetry: (id) => client.retryMessage(id),
      onDiscard: (id) => client.discardMessage(id),
    }),
    [client],
  );

  // The conversation shown, read when a button is pressed (the actions stay the same object,
  // so memoised rows do not re-render).
  const shownRef = useRef<string | null>(null);
  shownRef.current = conversationId;
  const messageActions = useMemo<MessageActions>(
    () => ({
      onEdit: (messageId, text) => shownRef.current !== null && client.editMessage(shownRef.current, messageId, text) !== null,
      onEditClosed: (messageId) => {
        for (const c of client.store.getState().commands) {
          if (c.type === "edit" && c.messageId === messageId) client.dismissCommand(c.requestId);
        }
      },
      onRegenerate: (inReplyTo) => {
        if (shownRef.current !== null) client.regenerate(shownRef.current, inReplyTo);
      },
      onSelectVersion: (messageId) => {
        if (shownRef.current !== null) client.selectVersion(shownRef.current, messageId);
      },
    }),
    [client],
  );
  const edits = useMemo(() => {
    const byMessage = new Map<string, PendingCommand>();
    for (const c of state.commands) if (c.type === "edit" && c.messageId !== null && c.conversationId === conversationId) byMessage.set(c.messageId, c);
    return byMessage;
  }, [state.commands, conversationId]);
  const shapingBlocked = conversation ? shapingBlockedReason(state, conversation) : null;

  const [confirm, setConfirm] = useState<{ kind: "conversation"; id: string; title: string } | { kind: "session" } | null>(null);
  const onRename = useCallback((id: string, title: string) => void client.renameConversation(id, title), [client]);
  const onExport = useCallback(
    (id: string, format: ExportFormat) => {
      void client.exportConversation(id, format).then((file) => file && saveFile(file));
    },
    [client],
  );
  const onDeleteAsked = useCallback(
    (id: string) => {
      const c = client.store.getState().conversations[id];
      if (c) setConfirm({ kind: "conversation", id, title: c.title });
    },
    [client],
  );
  const onDeleteAllAsked = useCallback(() => setConfirm({ kind: "session" }), []);
  // Once a deletion is confirmed, what opened the dialog is about to go: the focus then goes
  // to "New chat" (a conversation), or to the message field (all chats).
  const deletedRef = useRef(false);
  const confirmed = () => {
    deletedRef.current = true;
    if (confirm?.kind === "conversation") {
      if (client.deleteConversation(confirm.id) !== null) forgetDraft(confirm.id);
    } else if (confirm?.kind === "session") {
      if (client.deleteSession() !== null) forgetAllDrafts();
    }
    setConfirm(null);
  };
  const focusAfterDialog = () => {
    const deleted = deletedRef.current;
    deletedRef.current = false;
    if (confirm?.kind === "session") return document.getElementById(MESSAGE_INPUT_ID);
    const target = !deleted && confirm?.kind === "conversation" ? document.getElementById(actionsButtonId(confirm.id)) : null;
    return target ?? document.getElementById(NEW_CHAT_BUTTON_ID);
  };

  const onSend = useCallback((text: string) => client.sendMessage(text) !== null, [client]);
  const onSelect = useCallback(
    (id: string) => {
      client.selectConversation(id);
      setSidebarOpen(false);
    },
    [client],
  );
  const onNew = useCallback(() => {
    if (client.startConversation()) setSidebarOpen(false);
  }, [client]);

  const connected = state.connection.kind === "open";
  const pending = conversation?.pending ?? null;
  const showWelcome = state.hydrated && !state.welcomeSeen && !welcomeClosed;

  const closeWelcome = (name: string | null) => {
    if (name) client.setProfile(name, state.profile.language);
    client.dismissWelcome();
    setWelcomeClosed(true);
  };

  return (
    <div className={`app${sidebarOpen ? " sidebar-open" : ""}`}>
      <aside className="sidebar" id="sidebar">
        <div className="brand">chatcore</div>
        <ConversationList
          conversations={summaries}
          activeId={conversationId}
          onSelect={onSelect}
          onNew={onNew}
          newDisabledReason={connected ? null : "Connect to start a new chat."}
          onRename={onRename}
          onExport={onExport}
          onDelete={onDeleteAsked}
          onDeleteAll={onDeleteAllAsked}
          changeDisabledReason={connected ? null : "Connect to rename or delete."}
        />
      </aside>
      {sidebarOpen && <div className="sidebar-scrim" onClick={() => setSidebarOpen(false)} aria-hidden="true" />}
      <main className="chat" aria-label="Chat">
        <header className="chat-header">
          <button
            type="button"
            className="btn btn-ghost menu-button"
            aria-controls="sidebar"
            aria-expanded={sidebarOpen}
            onClick={() => setSidebarOpen((open) => !open)}
          >
            Chats
          </button>
          <h1 className="chat-title" title={conversation?.title}>
            {conversation?.title ?? "New chat"}
          </h1>
          <span className="model-name" title="The model answering">
            {state.model ?? ""}
          </span>
          <ConnectionStatus
            status={state.connection}
            sessionDeleted={state.sessionDeleted}
            onRetry={() => client.retryNow()}
            onNewSession={() => client.startNewSession()}
          />
        </header>
        <MessageList
          conversation={conversation}
          outbox={outbox}
          model={model}
          waitingReason={waitingReason(state)}
          actions={actions}
          messageActions={messageActions}
          shapingBlocked={shapingBlocked}
          edits={edits}
          maxChars={state.limits?.max_message_chars ?? DEFAULT_MAX_CHARS}
        />
        <TypingIndicator active={pending?.reply != null} model={pending?.reply?.models.at(-1) ?? model} />
        {state.notice && (
          <div className="notice" role="status">
            <span>{state.notice.text}</span>
            <button type="button" className="btn btn-small btn-ghost" onClick={() => client.dismissNotice()}>
              Dismiss
            </button>
          </div>
        )}
        <MessageInput
          draftKey={conversationId ?? "new"}
          blockedReason={blockedReason(state)}
          hint={sendHint(state)}
          maxChars={state.limits?.max_message_chars ?? DEFAULT_MAX_CHARS}
          onSend={onSend}
          stop={
            pending
              ? {
                  onStop: () => client.cancelReply(),
                  disabledReason: connected ? null : "Reconnect to stop the reply.",
                  requested: pending.cancelRequested,
                }
              : null
          }
        />
      </main>
      <div className="sr-only" aria-live="polite" aria-atomic="true" data-testid="live-region">
        {state.announcement?.text ?? ""}
      </div>
      {confirm?.kind === "conversation" && (
        <ConfirmDialog
          title="Delete this conversation?"
          confirmLabel="Delete"
          onConfirm={confirmed}
          onCancel={() => setConfirm(null)}
          fallbackFocus={focusAfterDialog}
        >
          <p>
            “{confirm.title}” and every version of its messages will be deleted from the server for good, on every device. This cannot be
            undone.
          </p>
        </ConfirmDialog>
      )}
      {confirm?.kind === "session" && (
        <ConfirmDialog
          title="Delete all your chats?"
          confirmLabel="Delete everything"
          onConfirm={confirmed}
          onCancel={() => setConfirm(null)}
          fallbackFocus={focusAfterDialog}
        >
          <p>
            Every conversation of this session is deleted from the server for good, with messages not sent yet. Other tabs and devices
            using it are signed out. A new, empty session starts here. This cannot be undone.
          </p>
        </ConfirmDialog>
      )}
      {showWelcome && (
        <WelcomeModal
          model={state.model}
          initialName={state.profile.displayName}
          onStart={closeWelcome}
          onClose={() => closeWelcome(null)}
        />
      )}
    </div>
  );
}

"use client";

import { useCallback, useEffect, useMemo, useState } from "react";
import { useChatState } from "@/hooks/useChatState";
import { useSessionRestore } from "@/hooks/useSessionRestore";
import { useWebSocket, type SocketOverrides } from "@/hooks/useWebSocket";
import { ChatClient } from "@/lib/chatClient";
import type { ChatState } from "@/lib/chatTypes";
import { outboxFor } from "@/lib/outbox";
import { activeConversation } from "@/lib/selectors";
import type { StorageLike } from "@/lib/storage";
import { ConnectionStatus } from "./ConnectionStatus";
import { ConversationList, type ConversationSummary } from "./ConversationList";
import { MessageInput } from "./MessageInput";
import { MessageList, type OutboxActions } from "./MessageList";
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
  if (state.connection.kind === "expired") return "Your session has expired: start a new session to keep chatting.";
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
          <ConnectionStatus status={state.connection} onRetry={() => client.retryNow()} onNewSession={() => client.startNewSession()} />
        </header>
        <MessageList conversation={conversation} outbox={outbox} model={model} waitingReason={waitingReason(state)} actions={actions} />
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

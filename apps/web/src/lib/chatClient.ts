/**
 * The chat's controller: what the UI can ask for, and the outbox pump.
 *
 * It owns the store and talks to the server through whatever socket handle `useWebSocket`
 * attached. Nothing here touches React or the DOM, so unit tests drive it with a fake socket.
 *
 * The outbox pump: every message typed goes to the outbox first (stored at once by
 * useSessionRestore), and is sent from there when the session is open and caught up. A
 * conversation answers one message at a time, so per conversation only the oldest entry is
 * sent, and only when the conversation has no reply pending; the next one follows after the
 * previous one's terminal reply. An entry leaves the outbox on its `ack` (or when its
 * `message_submitted` event shows up on resume); a duplicate send is harmless because the
 * server recognises the client message id.
 */

import type { ChatState, CommandType, OutboxEntry, PendingCommand } from "./chatTypes";
import { ChatStore } from "./chatStore";
import { SESSIONS_PATH } from "./endpoints";
import { httpExportApi, RestError, type ExportApi, type ExportedFile, type ExportFormat } from "./exports";
import { newId } from "./ids";
import { MINUTE_MS, nextSendAt, sendRefusal } from "./limits";
import { describeError } from "./notices";
import { PROTOCOL_VERSION, type ClientFrame, type Edit, type HelloFrame, type SendFrame, type ServerFrame } from "./protocol";
import { activeConversation, shapingBlockedReason } from "./selectors";
import {
  browserTimers,
  SessionGoneError,
  type SocketHandle,
  type SocketStatus,
  type TimerId,
  type Timers,
} from "./socket";

export interface CreatedSession {
  session_id: string;
  conversation_id: string;
  token: string;
  expires_at: string | null;
}

export interface SessionApi {
  create(profile: { display_name?: string; language?: string }): Promise<CreatedSession>;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const httpSessionApi: SessionApi = {
  async create(profile) {
    const response = await fetch(SESSIONS_PATH, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(profile),
    });
    if (!response.ok) {
      throw new HttpError(response.status, `the server answered ${response.status}`);
    }
    const body = (await response.json()) as Partial<CreatedSession>;
    if (typeof body.token !== "string" || typeof body.session_id !== "string" || typeof body.conversation_id !== "string") {
      throw new Error("the server sent an unexpected answer");
    }
    return {
      session_id: body.session_id,
      conversation_id: body.conversation_id,
      token: body.token,
      expires_at: typeof body.expires_at === "string" ? body.expires_at : null,
    };
  },
};

export interface ChatClientDeps {
  api?: SessionApi;
  exports?: ExportApi;
  ids?: () => string;
  timers?: Timers;
  store?: ChatStore;
}

export class ChatClient {
  readonly store: ChatStore;
  private readonly api: SessionApi;
  private readonly exportApi: ExportApi;
  private readonly ids: () => string;
  /** The user asked to delete the session: when the server then closes with 4001, a new
   * session starts by itself instead of the "expired" banner. */
  private deletingSession = false;
  private readonly timers: Timers;
  private transport: SocketHandle | null = null;
  /** Bumped each time a connection is welcomed: in-flight marks of older ones lapse. */
  private connectionSerial = 0;
  private readonly inflight = new Map<string, number>();
  /** When the `send`s of the last minute went out, oldest first (limits.messages_per_minute). */
  private sentAt: number[] = [];
  private wakeTimer: TimerId | null = null;
  private wakeAt = Infinity;
  private pumping = false;
  private pumpAgain = false;

  constructor(deps: ChatClientDeps = {}) {
    this.timers = deps.timers ?? browserTimers;
    this.store = deps.store ?? new ChatStore(undefined, () => this.timers.now());
    this.api = deps.api ?? httpSessionApi;
    this.exportApi = deps.exports ?? httpExportApi();
    this.ids = deps.ids ?? newId;
    this.store.subscribe(this.pump);
  }

  // --- wiring (useWebSocket) ----------------------------------------------------------------

  attach(handle: SocketHandle): void {
    this.transport = handle;
  }

  detach(handle: SocketHandle): void {
    if (this.transport === handle) this.transport = null;
  }

  /** Builds the first frame of a connection, creating a session if there is none yet. */
  prepareHello = async (): Promise<HelloFrame> => {
    this.store.flush();
    let state = this.store.getState();
    if (state.session === null) {
      let created: CreatedSession;
      try {
        created = await this.api.create({
          ...(state.profile.displayName ? { display_name: state.profile.displayName } : {}),
          ...(state.profile.language ? { language: state.profile.language } : {}),
        });
      } catch (error) {
        if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
          throw new SessionGoneError("the server refused to open a session");
        }
        throw error;
      }
      // Another attempt may have created one meanwhile; keep the first.
      if (this.store.getState().session === null) {
        this.store.dispatch({
          type: "session_created",
          session: { sessionId: created.session_id, token: created.token, tokenExpiresAt: created.expires_at },
          conversationId: created.conversation_id,
        });
      }
      state = this.store.getState();
    }
    const session = state.session;
    if (session === null) throw new Error("no session");
    return {
      type: "hello",
      protocol: PROTOCOL_VERSION,
      token: session.token,
      last_event_id: state.cursor,
    };
  };

  receive = (frame: ServerFrame): void => {
    if (frame.type === "error" && frame.request_id && this.inflight.has(frame.request_id)) {
      this.inflight.delete(frame.request_id);
    }
    if (frame.type === "error" && this.deletingSession && frame.request_id) {
      const command = this.store.getState().commands.find((c) => c.requestId === frame.request_id);
      if (command?.type === "delete_session") this.deletingSession = false;
    }
    this.store.receive(frame);
  };

  onBadCursor = (): void => {
    this.store.dispatch({ type: "cursor_reset" });
  };

  onStatus = (status: SocketStatus): void => {
    if (status.kind === "open") this.connectionSerial += 1;
    this.store.dispatch({ type: "connection", status });
    if (status.kind === "expired" && this.deletingSession) {
      // The session was deleted as asked: begin a fresh one (after this status is settled).
      this.deletingSession = false;
      this.timers.setTimeout(() => this.startNewSession({ dropOutbox: true }), 0);
    }
  };

  // --- what the UI asks for -----------------------------------------------------------------

  /** Queue a message for the active conversation; it is sent as soon as it can be. When every
   * conversation was deleted, a new one is started first (only possible while connected). */
  sendMessage(text: string): string | null {
    if (!text.trim()) return null;
    const state = this.store.getState();
    let conversationId = activeConversation(state)?.id ?? state.activeId;
    if (conversationId !== null && state.caughtUp && !state.conversations[conversationId]) {
      conversationId = this.startConversation();
      if (conversationId === null) return null;
    }
    const entry: OutboxEntry = {
      clientMessageId: this.ids(),
      conversationId,
      text,
      createdAt: new Date(this.timers.now()).toISOString(),
      notBefore: null,
      error: null,
    };
    this.store.dispatch({ type: "outbox_added", entry });
    return entry.clientMessageId;
  }

  /** Ask the server to stop the active conversation's reply (only while connected). */
  cancelReply(): boolean {
    const conv = activeConversation(this.store.getState());
    if (!conv?.pending || conv.pending.cancelRequested || !this.transport) return false;
    return this.transport.sendIfOpen({
      type: "cancel",
      conversation_id: conv.id,
      request_id: this.ids(),
    });
  }

  /** Start a new conversation (only while connected: its id must reach the server first). */
  startConversation(): string | null {
    if (!this.transport) return null;
    const id = this.ids();
    if (!this.transport.sendIfOpen({ type: "start_conversation", conversation_id: id, request_id: this.ids() })) {
      return null;
    }
    this.store.dispatch({
      type: "conversation_opened",
      conversationId: id,
      title: "New chat",
      at: new Date(this.timers.now()).toISOString(),
    });
    return id;
  }

  // --- shaping a conversation: versions, names, deletion ----------------------------------

  /** A new version of the user message `messageId` with `text`: a new branch, answered like
   * a message. Returns the request id (its answer is in `state.commands`), or null when it
   * cannot be sent now (the reason is shown as a notice). Sending the same text again after
   * a failure reuses its client message id, so it is recorded at most once. */
  editMessage(conversationId: string, messageId: string, text: string): string | null {
    if (!text.trim()) return null;
    const state = this.store.getState();
    // A refused (or unanswered, connection lost) edit of the same message is replaced; one
    // still on its way blocks this one (see `command`).
    const earlier = state.commands.find((c) => c.type === "edit" && c.messageId === messageId && c.error !== null);
    const clientMessageId = earlier && earlier.text === text && earlier.clientMessageId ? earlier.clientMessageId : this.ids();
    const frame: Edit = {
      type: "edit",
      request_id: "",
      conversation_id: conversationId,
      message_id: messageId,
      client_message_id: clientMessageId,
      text,
    };
    const refusal = sendRefusal(frame, state.limits);
    if (refusal !== null) {
      this.store.dispatch({ type: "notice", text: refusal.message });
      return null;
    }
    if (earlier) this.store.dispatch({ type: "command_dismissed", requestId: earlier.requestId });
    return this.command(frame, { conversationId, messageId, text, clientMessageId }, { shaping: true });
  }

  /** Answer the user message `messageId` again (its earlier answers stay, as versions). */
  regenerate(conversationId: string, messageId: string): string | null {
    return this.command(
      { type: "regenerate", request_id: "", conversation_id: conversationId, message_id: messageId },
      { conversationId, messageId },
      { shaping: true },
    );
  }

  /** Make the version `messageId` part of the active path, for every tab of the session. */
  selectVersion(conversationId: string, messageId: string): string | null {
    return this.command(
      { type: "select_branch", request_id: "", conversation_id: conversationId, message_id: messageId },
      { conversationId, messageId },
      { shaping: true },
    );
  }

  renameConversation(conversationId: string, title: string): string | null {
    const trimmed = title.trim();
    const current = this.store.getState().conversations[conversationId];
    if (!trimmed || !current || current.title === trimmed) return null;
    return this.command(
      { type: "rename_conversation", request_id: "", conversation_id: conversationId, title: trimmed },
      { conversationId },
    );
  }

  /** Delete a conversation for good (every tab sees it go). When it was the last one, a new
   * empty conversation is started so there is somewhere to write. */
  deleteConversation(conversationId: string): string | null {
    const requestId = this.command({ type: "delete_conversation", request_id: "", conversation_id: conversationId }, { conversationId });
    if (requestId === null) return null;
    const state = this.store.getState();
    if (state.order.every((id) => id === conversationId)) this.startConversation();
    return requestId;
  }

  /** Delete the whole session for good; a new, empty session follows by itself. */
  deleteSession(): string | null {
    const requestId = this.command({ type: "delete_session", request_id: "" }, {});
    if (requestId !== null) this.deletingSession = true;
    return requestId;
  }

  /** Fetch a conversation's export (REST); null, with a notice, when it cannot be had. */
  async exportConversation(conversationId: string, format: ExportFormat): Promise<ExportedFile | null> {
    const state = this.store.getState();
    const conv = state.conversations[conversationId];
    if (state.session === null || !conv) return null;
    try {
      return await this.exportApi.fetch({
        sessionId: state.session.sessionId,
        token: state.session.token,
        conversationId,
        title: conv.title,
        format,
      });
    } catch (error) {
      const text =
        error instanceof RestError
          ? `The export failed: ${error.message}`
          : "The export failed: the server could not be reached. Try again once connected.";
      this.store.dispatch({ type: "notice", text });
      return null;
    }
  }

  /**
   * Send one command now (commands are never queued: they only make sense against the
   * history as it is) and remember it until its answer. `shaping`: it changes a
   * conversation's path, so it waits for the conversation's reply and for any such command
   * already in flight there; the reason is shown otherwise.
   */
  private command(
    frame: Extract<ClientFrame, { type: CommandType }>,
    about: { conversationId?: string; messageId?: string; text?: string; clientMessageId?: string },
    options: { shaping?: boolean } = {},
  ): string | null {
    const state = this.store.getState();
    const conversationId = about.conversationId ?? null;
    const conv = conversationId === null ? null : state.conversations[conversationId];
    if (conversationId !== null && !conv) {
      this.store.dispatch({ type: "notice", text: describeError("unknown_conversation") });
      return null;
    }
    const blocked = options.shaping && conv ? shapingBlockedReason(state, conv) : null;
    if (blocked !== null) {
      this.store.dispatch({ type: "notice", text: blocked });
      return null;
    }
    const requestId = this.ids();
    if (!this.transport || !this.transport.sendIfOpen({ ...frame, request_id: requestId })) {
      this.store.dispatch({ type: "notice", text: "Not connected: try again once the connection is back." });
      return null;
    }
    if (frame.type === "edit" || frame.type === "regenerate") {
      // They count against the same messages_per_minute as a send.
      const now = this.timers.now();
      this.sentAt = [...this.sentAt.filter((t) => t > now - MINUTE_MS), now];
    }
    const command: PendingCommand = {
      requestId,
      type: frame.type,
      conversationId,
      messageId: about.messageId ?? null,
      text: about.text ?? null,
      clientMessageId: about.clientMessageId ?? null,
      error: null,
    };
    this.store.dispatch({ type: "command_sent", command });
    return requestId;
  }

  /** Forget a refused command (e.g. the user cancelled the edit it was). */
  dismissCommand(requestId: string): void {
    this.store.dispatch({ type: "command_dismissed", requestId });
  }

  selectConversation(conversationId: string): void {
    this.store.dispatch({ type: "conversation_selected", conversationId });
  }

  setProfile(displayName: string | null, language: string | null): void {
    const name = displayName?.trim() || null;
    const lang = language?.trim() || null;
    this.transport?.send({ type: "set_profile", display_name: name, language: lang, request_id: this.ids() });
  }

  dismissWelcome(): void {
    this.store.dispatch({ type: "welcome_dismissed" });
  }

  /** The session is gone: forget it and open a new one (unsent messages are kept, unless
   * the user deleted their chats). */
  startNewSession(options: { dropOutbox?: boolean } = {}): void {
    this.inflight.clear();
    this.store.dispatch({ type: "session_discarded", dropOutbox: options.dropOutbox === true });
    this.transport?.retryNow();
  }

  retryNow(): void {
    this.transport?.retryNow();
  }

  retryMessage(clientMessageId: string): void {
    this.store.dispatch({ type: "outbox_retry", clientMessageId });
  }

  discardMessage(clientMessageId: string): void {
    this.inflight.delete(clientMessageId);
    this.store.dispatch({ type: "outbox_removed", clientMessageId });
  }

  dismissNotice(): void {
    this.store.dispatch({ type: "notice", text: null });
  }

  dispose(): void {
    if (this.wakeTimer !== null) this.timers.clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
  }

  // --- the outbox pump ----------------------------------------------------------------------

  private readonly pump = (): void => {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        this.pumpOnce(this.store.getState());
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  };

  private pumpOnce(state: ChatState): void {
    const transport = this.transport;
    if (!transport || !transport.isOpen() || !state.caughtUp || state.session === null) return;
    const now = this.timers.now();
    const considered = new Set<string>();
    let wake = Infinity;
    for (const entry of state.outbox) {
      if (entry.error !== null || entry.conversationId === null) continue;
      const conversationId = entry.conversationId;
      if (considered.has(conversationId)) continue;
      considered.add(conversationId);
      const conv = state.conversations[conversationId];
      if (!conv) {
        this.store.dispatch({
          type: "outbox_refused",
          clientMessageId: entry.clientMessageId,
          code: "unknown_conversation",
          message: "This conversation no longer exists.",
        });
        return;
      }
      if (conv.pending !== null) continue;
      if (this.inflight.get(entry.clientMessageId) === this.connectionSerial) continue;
      if (entry.notBefore !== null && entry.notBefore > now) {
        wake = Math.min(wake, entry.notBefore);
        continue;
      }
      const frame: SendFrame = {
        type: "send",
        conversation_id: conversationId,
        client_message_id: entry.clientMessageId,
        request_id: entry.clientMessageId,
        text: entry.text,
      };
      const refusal = sendRefusal(frame, state.limits);
      if (refusal !== null) {
        this.refuse(entry, refusal.code, refusal.message);
        return;
      }
      if (state.limits !== null) {
        const at = nextSendAt(this.sentAt, state.limits.messages_per_minute, now);
        if (at > now) {
          wake = Math.min(wake, at);
          continue;
        }
      }
      if (transport.sendIfOpen(frame)) {
        this.inflight.set(entry.clientMessageId, this.connectionSerial);
        this.sentAt = [...this.sentAt.filter((t) => t > now - MINUTE_MS), now];
      }
    }
    this.scheduleWake(wake, now);
  }

  private refuse(entry: OutboxEntry, code: string, message: string): void {
    this.store.dispatch({ type: "outbox_refused", clientMessageId: entry.clientMessageId, code, message });
  }

  private scheduleWake(at: number, now: number): void {
    if (at === Infinity || (this.wakeTimer !== null && this.wakeAt <= at)) return;
    if (this.wakeTimer !== null) this.timers.clearTimeout(this.wakeTimer);
    this.wakeAt = at;
    this.wakeTimer = this.timers.setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAt = Infinity;
      this.pump();
    }, Math.max(0, at - now));
  }
}

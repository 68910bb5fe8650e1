/**
 * The shape of the client's state, and the actions that change it (reduced in chatState.ts).
 *
 * Objects are never mutated: an unchanged message keeps its identity, so memoised rows do not
 * re-render while another row streams.
 */

import type { Limits, MessageStatus, ServerFrame } from "./protocol";
import type { SocketStatus } from "./socket";

export interface ChatMessage {
  id: string;
  role: "user" | "assistant";
  text: string;
  cursor: string | null;
  at: string;
  status: MessageStatus;
  clientMessageId: string | null;
  inReplyTo: string | null;
  models: string[];
  errorCode: string | null;
  error: string | null;
  /** The message this one follows in the conversation's tree (null: the first of a branch
   * that starts at the beginning); an answer's parent is the message it answers. */
  parentId: string | null;
}

export interface DraftReply {
  replyId: string;
  text: string;
  models: string[];
  attempt: number;
  startedAt: string;
}

/** A user message accepted by the server and not answered yet. */
export interface PendingTurn {
  messageId: string;
  clientMessageId: string | null;
  cancelRequested: boolean;
  reply: DraftReply | null;
  /** Why the last attempt was cut off (a retry follows), if it was. */
  interrupted: string | null;
}

export interface Conversation {
  id: string;
  title: string;
  startedAt: string;
  /** The active path, oldest first: what is shown, and what a prompt is built from. */
  messages: ChatMessage[];
  /** Every other message (other versions and what follows them), oldest first. */
  branches: ChatMessage[];
  pending: PendingTurn | null;
}

/** A message typed by the user and not yet confirmed by the server. */
export interface OutboxEntry {
  clientMessageId: string;
  /** null when typed before any session existed; set when the session is created. */
  conversationId: string | null;
  text: string;
  createdAt: string;
  /** Not before this time (ms since epoch): the server asked us to wait. */
  notBefore: number | null;
  /** A permanent refusal: the entry is kept (the text is not lost) but not sent again. */
  error: { code: string; message: string } | null;
}

/** The commands that shape conversations, sent over the socket and answered by an ack or an
 * error (each a frame of its own type, named here by it). */
export type CommandType =
  | "edit"
  | "regenerate"
  | "select_branch"
  | "rename_conversation"
  | "delete_conversation"
  | "delete_session";

/** A command sent and not answered yet, or refused (then `error` says why). */
export interface PendingCommand {
  requestId: string;
  type: CommandType;
  conversationId: string | null;
  /** The message it is about (the one edited, answered again, or chosen), if any. */
  messageId: string | null;
  /** An edit's new text and client message id (sending it again records it once). */
  text: string | null;
  clientMessageId: string | null;
  error: { code: string; message: string } | null;
}

export interface SessionInfo {
  sessionId: string;
  token: string;
  tokenExpiresAt: string | null;
}

export interface Profile {
  displayName: string | null;
  language: string | null;
}

export interface Notice {
  id: number;
  text: string;
}

/** The part of the state that is the fold of the session's events (see fold.ts). */
export interface SessionHistory {
  profile: Profile;
  conversations: Readonly<Record<string, Conversation>>;
  /** Conversation ids, oldest first. */
  order: readonly string[];
}

export interface ChatState extends SessionHistory {
  /** False until the saved state (if any) was read from storage. */
  hydrated: boolean;
  session: SessionInfo | null;
  /** The last event applied: what the next `hello` resumes from. */
  cursor: string | null;
  /** True once the server said everything up to now was sent on this connection. */
  caughtUp: boolean;
  model: string | null;
  limits: Limits | null;
  activeId: string | null;
  outbox: readonly OutboxEntry[];
  connection: SocketStatus;
  welcomeSeen: boolean;
  /** A transient message for the user (an error the server sent about a command). */
  notice: Notice | null;
  /** What the polite live region says (completed replies, not every token). */
  announcement: Notice | null;
  /** Commands sent and not yet acknowledged, or refused (see PendingCommand). */
  commands: readonly PendingCommand[];
  /** The session was deleted (its `session_deleted` event arrived): it cannot continue. */
  sessionDeleted: boolean;
}

export const initialState: ChatState = {
  hydrated: false,
  session: null,
  cursor: null,
  caughtUp: false,
  model: null,
  limits: null,
  profile: { displayName: null, language: null },
  conversations: {},
  order: [],
  activeId: null,
  outbox: [],
  connection: { kind: "idle" },
  welcomeSeen: false,
  notice: null,
  announcement: null,
  commands: [],
  sessionDeleted: false,
};

/** What is kept in storage between visits (see storage.ts). */
export interface SavedChat {
  session: SessionInfo | null;
  cursor: string | null;
  model: string | null;
  limits: Limits | null;
  profile: Profile;
  conversations: Record<string, Conversation>;
  order: string[];
  activeId: string | null;
}

export type ChatAction =
  | {
      type: "restored";
      saved: SavedChat | null;
      outbox: OutboxEntry[];
      welcomeSeen: boolean;
    }
  | { type: "frames"; frames: readonly ServerFrame[]; now: number }
  | { type: "connection"; status: SocketStatus }
  | { type: "session_created"; session: SessionInfo; conversationId: string }
  /** Forget the session (a new one follows); `dropOutbox`: its unsent messages go too (the
   * user deleted their chats), otherwise they move to the new session. */
  | { type: "session_discarded"; dropOutbox?: boolean }
  | { type: "cursor_reset" }
  | { type: "outbox_added"; entry: OutboxEntry }
  | { type: "outbox_merged"; entries: readonly OutboxEntry[] }
  | { type: "outbox_removed"; clientMessageId: string }
  | { type: "outbox_retry"; clientMessageId: string }
  | { type: "outbox_refused"; clientMessageId: string; code: string; message: string }
  | { type: "conversation_selected"; conversationId: string }
  | { type: "conversation_opened"; conversationId: string; title: string; at: string }
  | { type: "command_sent"; command: PendingCommand }
  | { type: "command_dismissed"; requestId: string }
  | { type: "welcome_dismissed" }
  | { type: "notice"; text: string | null };

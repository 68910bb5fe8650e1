/**
 * The `/ws` protocol, version 1, as the client sees it. Mirrors `src/chatcore/protocol.py`
 * and `src/chatcore/events.py`; field names stay in the server's snake_case on purpose so a
 * frame can be compared with the Python models line by line.
 */

export const PROTOCOL_VERSION = 1;

// --- client to server ---------------------------------------------------------------------

export interface HelloFrame {
  type: "hello";
  protocol: number;
  token: string;
  last_event_id: string | null;
}

export interface SendFrame {
  type: "send";
  request_id?: string;
  conversation_id: string;
  client_message_id: string;
  text: string;
}

export interface CancelFrame {
  type: "cancel";
  request_id?: string;
  conversation_id: string;
}

export interface StartConversationFrame {
  type: "start_conversation";
  request_id?: string;
  conversation_id?: string;
  title?: string;
}

export interface RenameConversationFrame {
  type: "rename_conversation";
  request_id?: string;
  conversation_id: string;
  title: string;
}

/** A partial update: a field left out keeps its value, `null` clears it, a blank string is
 * refused (`invalid_profile`). */
export interface SetProfileFrame {
  type: "set_profile";
  request_id?: string;
  display_name?: string | null;
  language?: string | null;
}

export interface PingFrame {
  type: "ping";
  request_id?: string;
  nonce?: string;
}

export type ClientFrame =
  | HelloFrame
  | SendFrame
  | CancelFrame
  | StartConversationFrame
  | RenameConversationFrame
  | SetProfileFrame
  | PingFrame;

// --- events of the session's log ----------------------------------------------------------

interface EventBase {
  at: string;
}

export interface SessionOpened extends EventBase {
  type: "session_opened";
  session_id: string;
}
export interface SessionRestored extends EventBase {
  type: "session_restored";
  last_seen?: string | null;
}
/** The session was logged out everywhere; a connection on an older token is closed with 4001. */
export interface TokensRevoked extends EventBase {
  type: "tokens_revoked";
  generation: number;
}
export interface ProfileUpdated extends EventBase {
  type: "profile_updated";
  display_name: string | null;
  language: string | null;
}
export interface ConversationStarted extends EventBase {
  type: "conversation_started";
  conversation_id: string;
  title: string;
}
export interface ConversationRenamed extends EventBase {
  type: "conversation_renamed";
  conversation_id: string;
  title: string;
}
export interface MessageSubmitted extends EventBase {
  type: "message_submitted";
  conversation_id: string;
  message_id: string;
  client_message_id: string;
  text: string;
}
export interface ReplyStarted extends EventBase {
  type: "reply_started";
  conversation_id: string;
  reply_id: string;
  in_reply_to: string;
  model: string;
  attempt: number;
}
export interface ReplyDelta extends EventBase {
  type: "reply_delta";
  conversation_id: string;
  reply_id: string;
  text: string;
}
export interface ReplyModelSwitched extends EventBase {
  type: "reply_model_switched";
  conversation_id: string;
  reply_id: string;
  from_model: string;
  to_model: string;
  reason: string;
}
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd?: number | null;
}
export interface ReplyCompleted extends EventBase {
  type: "reply_completed";
  conversation_id: string;
  reply_id: string;
  in_reply_to: string;
  model: string;
  usage?: Usage;
}
export interface ReplyFailed extends EventBase {
  type: "reply_failed";
  conversation_id: string;
  reply_id: string | null;
  in_reply_to: string;
  code: string;
  reason: string;
  partial_text: string;
}
export interface ReplyCancelRequested extends EventBase {
  type: "reply_cancel_requested";
  conversation_id: string;
  in_reply_to: string;
  reply_id: string | null;
}
export interface ReplyCancelled extends EventBase {
  type: "reply_cancelled";
  conversation_id: string;
  reply_id: string | null;
  in_reply_to: string;
  partial_text: string;
}
export interface ReplyAbandoned extends EventBase {
  type: "reply_abandoned";
  conversation_id: string;
  reply_id: string;
  in_reply_to: string;
  reason: string;
}

export type ChatEvent =
  | SessionOpened
  | SessionRestored
  | ProfileUpdated
  | ConversationStarted
  | ConversationRenamed
  | MessageSubmitted
  | ReplyStarted
  | ReplyDelta
  | ReplyModelSwitched
  | ReplyCompleted
  | ReplyFailed
  | ReplyCancelRequested
  | ReplyCancelled
  | ReplyAbandoned
  | TokensRevoked;

// --- server to client ---------------------------------------------------------------------

export interface Limits {
  max_message_chars: number;
  max_frame_bytes: number;
  messages_per_minute: number;
  /** Seconds without any frame from the client before the server closes with 4008: send a
   * ping at least every `idle_timeout / 3` seconds, whatever arrives. */
  idle_timeout: number;
}

/** The server's default `idle_timeout` (seconds), for limits saved before it was kept. */
export const DEFAULT_IDLE_TIMEOUT = 90;

export interface WelcomeFrame {
  type: "welcome";
  protocol?: number;
  session_id: string;
  token: string;
  token_expires_at: string;
  model: string;
  limits: Limits;
  resume: "snapshot" | "events";
}

export interface PendingReplyState {
  reply_id: string;
  text: string;
  model: string;
  attempt: number;
}

export interface PendingState {
  message_id: string;
  cancel_requested: boolean;
  reply: PendingReplyState | null;
}

export type MessageStatus = "complete" | "failed" | "cancelled";

export interface MessageState {
  message_id: string;
  role: "user" | "assistant";
  text: string;
  cursor: string;
  at: string;
  status: MessageStatus;
  client_message_id?: string | null;
  in_reply_to?: string | null;
  models?: string[];
  error_code?: string | null;
  error?: string | null;
}

export interface ConversationState {
  conversation_id: string;
  title: string;
  started_at: string;
  messages: MessageState[];
  pending: PendingState | null;
}

export interface SnapshotFrame {
  type: "snapshot";
  cursor: string;
  profile: { display_name: string | null; language: string | null };
  conversations: ConversationState[];
}

export interface EventFrame {
  type: "event";
  cursor: string;
  event: ChatEvent;
}

export interface CaughtUpFrame {
  type: "caught_up";
  /** Where the client now is (never null): store it as the resume cursor. */
  cursor: string;
}

export type AckableType = "send" | "cancel" | "start_conversation" | "rename_conversation" | "set_profile";

export interface AckFrame {
  type: "ack";
  request_id?: string | null;
  for_type: AckableType;
  /** Where the command was recorded; null when it changed nothing. */
  cursor: string | null;
  conversation_id?: string | null;
  client_message_id?: string | null;
  message_id?: string | null;
  duplicate?: boolean;
}

export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  request_id?: string | null;
  retry_after?: number | null;
}

export interface PongFrame {
  type: "pong";
  request_id?: string | null;
  nonce?: string | null;
}

export type ServerFrame =
  | WelcomeFrame
  | SnapshotFrame
  | EventFrame
  | CaughtUpFrame
  | AckFrame
  | ErrorFrame
  | PongFrame;

/** Error codes after which the session is gone for good (a new one must be started). */
export const SESSION_GONE_CODES: ReadonlySet<string> = new Set(["unauthorized", "token_expired", "session_not_found"]);

/** Close codes with a meaning of their own (RFC 6455 and the server's private range). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  frameTooBig: 1009,
  policyViolation: 1008,
  tryAgainLater: 1013,
  unauthorized: 4001,
  badCursor: 4002,
  unsupportedProtocol: 4003,
  idleTimeout: 4008,
  /** Used by this client when it closes a socket that went silent. */
  clientDeadPeer: 4000,
} as const;

// --- parsing ------------------------------------------------------------------------------

const EVENT_TYPES: ReadonlySet<string> = new Set([
  "session_opened",
  "session_restored",
  "profile_updated",
  "conversation_started",
  "conversation_renamed",
  "message_submitted",
  "reply_started",
  "reply_delta",
  "reply_model_switched",
  "reply_completed",
  "reply_failed",
  "reply_cancel_requested",
  "reply_cancelled",
  "reply_abandoned",
  "tokens_revoked",
]);

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hasStrings(obj: JsonObject, keys: readonly string[]): boolean {
  return keys.every((k) => typeof obj[k] === "string");
}

/** The string fields each event type must carry (beyond `type` and `at`). */
const EVENT_REQUIRED: Record<string, readonly string[]> = {
  session_opened: ["session_id"],
  session_restored: [],
  profile_updated: [],
  conversation_started: ["conversation_id", "title"],
  conversation_renamed: ["conversation_id", "title"],
  message_submitted: ["conversation_id", "message_id", "client_message_id", "text"],
  reply_started: ["conversation_id", "reply_id", "in_reply_to", "model"],
  reply_delta: ["conversation_id", "reply_id", "text"],
  reply_model_switched: ["conversation_id", "reply_id", "to_model"],
  reply_completed: ["conversation_id", "reply_id", "in_reply_to"],
  reply_failed: ["conversation_id", "in_reply_to", "code", "reason"],
  reply_cancel_requested: ["conversation_id", "in_reply_to"],
  reply_cancelled: ["conversation_id", "in_reply_to"],
  reply_abandoned: ["conversation_id", "reply_id", "in_reply_to"],
  tokens_revoked: [],
};

function isEvent(value: unknown): value is ChatEvent {
  if (!isObject(value) || typeof value.type !== "string" || !EVENT_TYPES.has(value.type)) {
    return false;
  }
  const required = EVENT_REQUIRED[value.type] ?? [];
  return typeof value.at === "string" && hasStrings(value, required);
}

/**
 * Parse one text frame from the server. Returns null for anything that is not a well-formed
 * frame of a known type: an unknown frame is skipped, never allowed to corrupt the state.
 */
export function parseServerFrame(data: unknown): ServerFrame | null {
  if (typeof data !== "string") return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (!isObject(value) || typeof value.type !== "string") return null;
  switch (value.type) {
    case "welcome":
      return hasStrings(value, ["session_id", "token", "model"]) && isObject(value.limits)
        ? (value as unknown as WelcomeFrame)
        : null;
    case "snapshot":
      return Array.isArray(value.conversations) && isObject(value.profile)
        ? (value as unknown as SnapshotFrame)
        : null;
    case "event":
      return typeof value.cursor === "string" && isEvent(value.event)
        ? (value as unknown as EventFrame)
        : null;
    case "caught_up":
      return value as unknown as CaughtUpFrame;
    case "ack":
      return typeof value.for_type === "string" ? (value as unknown as AckFrame) : null;
    case "error":
      return hasStrings(value, ["code"]) ? (value as unknown as ErrorFrame) : null;
    case "pong":
      return value as unknown as PongFrame;
    default:
      return null;
  }
}

/**
 * The `/ws` protocol, version 1, as the client sees it.
 *
 * The wire types are not written here: they are generated from the server's models
 * (`src/chatcore/protocol.py`, `src/chatcore/events.py` -> `chatcore schema` ->
 * `docs/protocol/*.json` -> `npm run protocol:generate` -> `protocol.generated.ts`), and a unit
 * test fails when that file is stale. This module re-exports them, gives the few the client
 * names differently their client-side names, and adds what is not a wire type: constants,
 * close codes and the guards that parse a frame. Field names stay in the server's snake_case.
 */

import type {
  Ack,
  CaughtUp,
  Error as ErrorFrameType,
  EventFrame,
  Hello,
  MessageState,
  Pong,
  Send,
  ServerFrame,
  Snapshot,
  Welcome,
} from "./protocol.generated";

export type * from "./protocol.generated";

export const PROTOCOL_VERSION = 1;

// --- the client's names for some wire types -----------------------------------------------

export type HelloFrame = Hello;
export type SendFrame = Send;
export type WelcomeFrame = Welcome;
export type SnapshotFrame = Snapshot;
export type AckFrame = Ack;
/** The `error` frame (the generated `Error` would shadow the global `Error` where imported). */
export type ErrorFrame = ErrorFrameType;
/** Any event of the session's log, as an `event` frame carries it. */
export type ChatEvent = EventFrame["event"];
export type ChatEventType = ChatEvent["type"];
export type MessageStatus = MessageState["status"];

/** The server's default `idle_timeout` (seconds), for limits saved before it was kept. */
export const DEFAULT_IDLE_TIMEOUT = 90;

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

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hasStrings(obj: JsonObject, keys: readonly string[]): boolean {
  return keys.every((k) => typeof obj[k] === "string");
}

/** The fields of `T` that are always a string (not optional, never null). */
type StringFields<T> = { [K in keyof T]-?: T[K] extends string ? K : never }[keyof T];

/**
 * The string fields each event type must carry (beyond `type` and `at`). Typed against the
 * generated events: a new event type, or a field listed that is not a required string of its
 * event, fails the type check.
 */
const EVENT_REQUIRED: {
  readonly [K in ChatEventType]: readonly Exclude<StringFields<Extract<ChatEvent, { type: K }>>, "type" | "at">[];
} = {
  session_opened: ["session_id"],
  session_restored: [],
  profile_updated: [],
  conversation_started: ["conversation_id", "title"],
  conversation_renamed: ["conversation_id", "title"],
  message_submitted: ["conversation_id", "message_id", "client_message_id", "text"],
  message_edited: ["conversation_id", "message_id", "client_message_id", "text", "edit_of"],
  reply_requested: ["conversation_id", "in_reply_to", "client_message_id"],
  branch_selected: ["conversation_id", "message_id", "leaf_id"],
  conversation_deleted: ["conversation_id"],
  session_deleted: [],
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

function isEventType(type: string): type is ChatEventType {
  return Object.prototype.hasOwnProperty.call(EVENT_REQUIRED, type);
}

function isEvent(value: unknown): value is ChatEvent {
  if (!isObject(value) || typeof value.type !== "string" || !isEventType(value.type)) return false;
  return typeof value.at === "string" && hasStrings(value, EVENT_REQUIRED[value.type]);
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
      return value as unknown as CaughtUp;
    case "ack":
      return typeof value.for_type === "string" ? (value as unknown as AckFrame) : null;
    case "error":
      return hasStrings(value, ["code"]) ? (value as unknown as ErrorFrame) : null;
    case "pong":
      return value as unknown as Pong;
    default:
      return null;
  }
}

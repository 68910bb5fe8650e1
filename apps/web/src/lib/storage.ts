/**
 * What survives a reload, in localStorage, under versioned keys:
 *
 * - `chatcore.web.v1.chat`: the session (token, id), the cursor of the last applied event and
 *   the history rendered at that cursor, written together so they always agree: on reload the
 *   history paints at once and the stream resumes after that cursor, so nothing is applied
 *   twice;
 * - `chatcore.web.v1.outbox`: messages typed and not yet confirmed (written at once, on every
 *   change: nothing typed is lost);
 * - `chatcore.web.v1.welcomed`: the welcome dialog was seen.
 *
 * Every read is guarded: unparsable or foreign data is ignored (the part that is fine is
 * kept: a valid token with a broken history resumes from a fresh snapshot).
 */

import { isCursor } from "./cursor";
import type {
  ChatMessage,
  ChatState,
  Conversation,
  DraftReply,
  OutboxEntry,
  PendingTurn,
  Profile,
  SavedChat,
  SessionInfo,
} from "./chatTypes";
import { DEFAULT_IDLE_TIMEOUT, type Limits } from "./protocol";

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export const STORAGE_KEYS = {
  chat: "chatcore.web.v1.chat",
  outbox: "chatcore.web.v1.outbox",
  welcomed: "chatcore.web.v1.welcomed",
} as const;

const FORMAT = 1;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
const isString = (v: unknown): v is string => typeof v === "string";
const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === "string";

function readJson(storage: StorageLike, key: string): unknown {
  let raw: string | null;
  try {
    raw = storage.getItem(key);
  } catch {
    return null;
  }
  if (raw === null) return null;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return null;
  }
}

function asSession(v: unknown): SessionInfo | null {
  if (!isObject(v) || !isString(v.sessionId) || !isString(v.token) || v.token === "") return null;
  return {
    sessionId: v.sessionId,
    token: v.token,
    tokenExpiresAt: isString(v.tokenExpiresAt) ? v.tokenExpiresAt : null,
  };
}

/** A message as saved. A client from before branches saved no `parentId`: its messages
 * follow each other (`previous`, the message before it on the path). */
function asMessage(v: unknown, previous: string | null = null): ChatMessage | null {
  if (!isObject(v) || !isString(v.id) || !isString(v.text) || !isString(v.at)) return null;
  if (v.role !== "user" && v.role !== "assistant") return null;
  if (v.status !== "complete" && v.status !== "failed" && v.status !== "cancelled") return null;
  if (!(v.cursor === null || isCursor(v.cursor))) return null;
  return {
    id: v.id,
    role: v.role,
    text: v.text,
    cursor: v.cursor,
    at: v.at,
    status: v.status,
    clientMessageId: isString(v.clientMessageId) ? v.clientMessageId : null,
    inReplyTo: isString(v.inReplyTo) ? v.inReplyTo : null,
    models: Array.isArray(v.models) ? v.models.filter(isString) : [],
    errorCode: isString(v.errorCode) ? v.errorCode : null,
    error: isString(v.error) ? v.error : null,
    parentId: isStringOrNull(v.parentId) ? v.parentId : previous,
  };
}

function asDraft(v: unknown): DraftReply | null {
  if (!isObject(v) || !isString(v.replyId) || !isString(v.text)) return null;
  return {
    replyId: v.replyId,
    text: v.text,
    models: Array.isArray(v.models) ? v.models.filter(isString) : [],
    attempt: typeof v.attempt === "number" ? v.attempt : 1,
    startedAt: isString(v.startedAt) ? v.startedAt : new Date(0).toISOString(),
  };
}

function asPending(v: unknown): PendingTurn | null | undefined {
  if (v === null) return null;
  if (!isObject(v) || !isString(v.messageId)) return undefined;
  const reply = v.reply === null ? null : asDraft(v.reply);
  if (v.reply !== null && reply === null) return undefined;
  return {
    messageId: v.messageId,
    clientMessageId: isString(v.clientMessageId) ? v.clientMessageId : null,
    cancelRequested: v.cancelRequested === true,
    reply,
    interrupted: isString(v.interrupted) ? v.interrupted : null,
  };
}

function asConversation(v: unknown): Conversation | null {
  if (!isObject(v) || !isString(v.id) || !isString(v.title) || !Array.isArray(v.messages)) return null;
  const messages: ChatMessage[] = [];
  for (const m of v.messages) {
    const message = asMessage(m, messages.at(-1)?.id ?? null);
    if (message === null) return null;
    messages.push(message);
  }
  const branches: ChatMessage[] = [];
  for (const m of Array.isArray(v.branches) ? v.branches : []) {
    const message = asMessage(m);
    if (message === null) return null;
    branches.push(message);
  }
  const pending = asPending(v.pending ?? null);
  if (pending === undefined) return null;
  return {
    id: v.id,
    title: v.title,
    startedAt: isString(v.startedAt) ? v.startedAt : new Date(0).toISOString(),
    messages,
    branches,
    pending,
  };
}

function asLimits(v: unknown): Limits | null {
  if (!isObject(v)) return null;
  const { max_message_chars, max_frame_bytes, messages_per_minute, idle_timeout } = v;
  if (typeof max_message_chars !== "number" || typeof max_frame_bytes !== "number") return null;
  return {
    max_message_chars,
    max_frame_bytes,
    messages_per_minute: typeof messages_per_minute === "number" ? messages_per_minute : 0,
    idle_timeout: typeof idle_timeout === "number" ? idle_timeout : DEFAULT_IDLE_TIMEOUT,
  };
}

function asProfile(v: unknown): Profile {
  if (!isObject(v)) return { displayName: null, language: null };
  return {
    displayName: isString(v.displayName) ? v.displayName : null,
    language: isString(v.language) ? v.language : null,
  };
}

/** The history part: all of it or nothing (a partial history must not claim a cursor). */
function asHistory(v: Json): Pick<SavedChat, "cursor" | "conversations" | "order"> | null {
  if (!(v.cursor === null || isCursor(v.cursor))) return null;
  if (!Array.isArray(v.order) || !v.order.every(isString) || !isObject(v.conversations)) return null;
  const conversations: Record<string, Conversation> = {};
  for (const id of v.order) {
    const conv = asConversation(v.conversations[id]);
    if (conv === null || conv.id !== id) return null;
    conversations[id] = conv;
  }
  return { cursor: v.cursor, conversations, order: v.order };
}

export function loadChat(storage: StorageLike): SavedChat | null {
  const data = readJson(storage, STORAGE_KEYS.chat);
  if (!isObject(data) || data.format !== FORMAT) return null;
  const session = asSession(data.session);
  if (session === null) return null;
  const history = asHistory(data) ?? { cursor: null, conversations: {}, order: [] };
  return {
    session,
    ...history,
    model: isString(data.model) ? data.model : null,
    limits: asLimits(data.limits),
    profile: asProfile(data.profile),
    activeId: isStringOrNull(data.activeId) ? data.activeId : null,
  };
}

export function savedFromState(state: ChatState): SavedChat {
  return {
    session: state.session,
    cursor: state.cursor,
    model: state.model,
    limits: state.limits,
    profile: state.profile,
    conversations: { ...state.conversations },
    order: [...state.order],
    activeId: state.activeId,
  };
}

function isQuotaError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { name, message, code } = error as { name?: unknown; message?: unknown; code?: unknown };
  return code === 22 || code === 1014 || /quota/i.test(`${String(name)} ${String(message)}`);
}

/** Returns false when nothing could be written. */
export function saveChat(storage: StorageLike, saved: SavedChat): boolean {
  if (saved.session === null) {
    try {
      storage.removeItem(STORAGE_KEYS.chat);
    } catch {
      return false;
    }
    return true;
  }
  try {
    storage.setItem(STORAGE_KEYS.chat, JSON.stringify({ format: FORMAT, ...saved }));
    return true;
  } catch (error) {
    if (!isQuotaError(error)) return false;
  }
  // Too big to keep: keep the session and let the next visit start from a fresh snapshot.
  try {
    const slim = { ...saved, cursor: null, conversations: {}, order: [] };
    storage.setItem(STORAGE_KEYS.chat, JSON.stringify({ format: FORMAT, ...slim }));
    return true;
  } catch {
    return false;
  }
}

/** Forget the saved chat if it is the session `sessionId` (deleted): another tab may have
 * saved a new session there meanwhile, which stays. */
export function forgetDeletedChat(storage: StorageLike, sessionId: string): void {
  const data = readJson(storage, STORAGE_KEYS.chat);
  const saved = isObject(data) ? asSession(data.session) : null;
  if (saved !== null && saved.sessionId !== sessionId) return;
  clearChat(storage);
}

export function clearChat(storage: StorageLike): void {
  try {
    storage.removeItem(STORAGE_KEYS.chat);
  } catch {
    // nothing to do: storage unavailable
  }
}

function asOutboxEntry(v: unknown): OutboxEntry | null {
  if (!isObject(v) || !isString(v.clientMessageId) || !isString(v.text)) return null;
  if (!isStringOrNull(v.conversationId ?? null)) return null;
  const error =
    isObject(v.error) && isString(v.error.code) && isString(v.error.message)
      ? { code: v.error.code, message: v.error.message }
      : null;
  return {
    clientMessageId: v.clientMessageId,
    conversationId: (v.conversationId as string | null | undefined) ?? null,
    text: v.text,
    createdAt: isString(v.createdAt) ? v.createdAt : new Date().toISOString(),
    notBefore: null,
    error,
  };
}

export function loadOutbox(storage: StorageLike): OutboxEntry[] {
  const data = readJson(storage, STORAGE_KEYS.outbox);
  if (!isObject(data) || data.format !== FORMAT || !Array.isArray(data.entries)) return [];
  const entries: OutboxEntry[] = [];
  for (const e of data.entries) {
    const entry = asOutboxEntry(e);
    if (entry !== null) entries.push(entry);
  }
  return entries;
}

export function saveOutbox(storage: StorageLike, outbox: readonly OutboxEntry[]): boolean {
  try {
    if (outbox.length === 0) storage.removeItem(STORAGE_KEYS.outbox);
    else storage.setItem(STORAGE_KEYS.outbox, JSON.stringify({ format: FORMAT, entries: outbox }));
    return true;
  } catch {
    return false;
  }
}

export function loadWelcomed(storage: StorageLike): boolean {
  try {
    return storage.getItem(STORAGE_KEYS.welcomed) === "1";
  } catch {
    return false;
  }
}

export function saveWelcomed(storage: StorageLike): void {
  try {
    storage.setItem(STORAGE_KEYS.welcomed, "1");
  } catch {
    // a welcome shown twice is no harm
  }
}

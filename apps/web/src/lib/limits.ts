/**
 * Keeping within the limits the server announces in `welcome.limits`, measured the way the
 * server measures them, so that the client refuses (or holds back) exactly what the server
 * would refuse, and nothing it would take.
 *
 * - `max_message_chars` counts Unicode code points (Python's `len`), not UTF-16 units: an
 *   emoji is one character, not two;
 * - `max_frame_bytes` counts the bytes of the frame's UTF-8 text;
 * - `messages_per_minute`: the client makes at most that many `send`s in any minute. (The
 *   server's bucket also has a burst it does not announce; a `rate_limited` refusal still waits
 *   its `retry_after`, see outbox.ts.)
 * - `idle_timeout` is the socket core's (socket.ts: a ping at least every third of it).
 */

import type { Edit, Limits, SendFrame } from "./protocol";

export const MINUTE_MS = 60_000;

/** The length of `text` as the server counts it: Unicode code points. */
export function messageLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

export function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

export interface Refusal {
  code: "message_too_long" | "frame_too_big";
  message: string;
}

/** Why the server would refuse this `send` (or `edit`) for its size, or null when it fits. */
export function sendRefusal(frame: SendFrame | Edit, limits: Limits | null): Refusal | null {
  if (limits === null) return null;
  const over = messageLength(frame.text) - limits.max_message_chars;
  if (over > 0) {
    return {
      code: "message_too_long",
      message: `The message is longer than ${limits.max_message_chars} characters (by ${over}).`,
    };
  }
  if (utf8Length(JSON.stringify(frame)) > limits.max_frame_bytes) {
    return { code: "frame_too_big", message: "The message is too large to send." };
  }
  return null;
}

/**
 * The earliest time (ms) a new `send` keeps within `perMinute` sends in any minute, given when
 * the earlier ones were made (oldest first): `now` when it fits at once.
 */
export function nextSendAt(sentAt: readonly number[], perMinute: number, now: number): number {
  if (perMinute < 1) return now;
  const recent = sentAt.filter((t) => t > now - MINUTE_MS);
  if (recent.length < perMinute) return now;
  return recent[recent.length - perMinute]! + MINUTE_MS;
}

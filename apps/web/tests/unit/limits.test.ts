import { describe, expect, it } from "vitest";
import { messageLength, nextSendAt, sendRefusal } from "@/lib/limits";
import type { SendFrame } from "@/lib/protocol";

const LIMITS = { max_message_chars: 10, max_frame_bytes: 200, messages_per_minute: 3, idle_timeout: 90 };

function send(text: string): SendFrame {
  return { type: "send", conversation_id: "c1", client_message_id: "k1", request_id: "k1", text };
}

describe("message length, as the server counts it", () => {
  it("counts code points: an emoji or an astral character is one, not two UTF-16 units", () => {
    expect(messageLength("hello")).toBe(5);
    expect(messageLength("👋🌍")).toBe(2);
    expect("👋🌍".length).toBe(4);
    expect(messageLength("𝔸b")).toBe(2);
  });

  it("counts a lone surrogate as one, like any other code point", () => {
    expect(messageLength("a\ud800b")).toBe(3);
    expect(messageLength("\udc00")).toBe(1);
  });
});

describe("refusing a send the server would refuse for its size", () => {
  it("accepts a message of exactly max_message_chars, counted in code points", () => {
    expect(sendRefusal(send("🙂".repeat(10)), LIMITS)).toBeNull();
  });

  it("refuses a longer one, saying by how much", () => {
    expect(sendRefusal(send("x".repeat(12)), LIMITS)).toEqual({
      code: "message_too_long",
      message: "The message is longer than 10 characters (by 2).",
    });
  });

  it("refuses a frame over max_frame_bytes of UTF-8 even when its text is short enough", () => {
    const limits = { ...LIMITS, max_frame_bytes: 120 };
    const frame = send("🙂".repeat(10)); // 40 bytes of text, 131 of frame
    expect(new TextEncoder().encode(JSON.stringify(frame)).length).toBe(131);
    expect(sendRefusal(frame, limits)?.code).toBe("frame_too_big");
    expect(sendRefusal(send("x".repeat(10)), limits)).toBeNull();
  });

  it("refuses nothing before the server announced its limits", () => {
    expect(sendRefusal(send("x".repeat(100_000)), null)).toBeNull();
  });
});

describe("at most messages_per_minute sends in any minute", () => {
  it("lets a send go at once while fewer were made in the last minute", () => {
    expect(nextSendAt([], 3, 1_000)).toBe(1_000);
    expect(nextSendAt([0, 500], 3, 1_000)).toBe(1_000);
    expect(nextSendAt([-60_000, 0, 500], 3, 1_000)).toBe(1_000); // the first is a minute old
  });

  it("holds the next one until the oldest of the minute's sends is a minute old", () => {
    expect(nextSendAt([0, 500, 900], 3, 1_000)).toBe(60_000);
    expect(nextSendAt([0, 500, 900, 950], 3, 1_000)).toBe(60_500);
    expect(nextSendAt([0, 500, 900], 3, 60_000)).toBe(60_000);
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ev } from "./support/fakeSocket";
import { connectFresh, renderPage, serve } from "./support/page";

vi.mock("@/lib/format", async (importOriginal) => {
  const actual = await importOriginal<typeof import("@/lib/format")>();
  return { ...actual, formatTime: vi.fn(actual.formatTime) };
});

import { formatTime } from "@/lib/format";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("rendering cost while streaming", () => {
  it("a token re-renders only the streaming row, not the finished messages", async () => {
    const rig = renderPage();
    const ws = await connectFresh(rig);
    serve(() => {
      for (let i = 0; i < 20; i++) {
        ws.push(ev(`${10 + i}-0`, { type: "message_submitted", conversation_id: "c1", message_id: `m${i}`, client_message_id: `k${i}`, text: `q${i}` }));
        ws.push(ev(`${10 + i}-1`, { type: "reply_failed", conversation_id: "c1", reply_id: null, in_reply_to: `m${i}`, code: "x", reason: "x", partial_text: "" }));
      }
      ws.push(ev("40-0", { type: "message_submitted", conversation_id: "c1", message_id: "mz", client_message_id: "kz", text: "last" }));
      ws.push(ev("40-1", { type: "reply_started", conversation_id: "c1", reply_id: "rz", in_reply_to: "mz", model: "Demo", attempt: 1 }));
    });
    const timestamps = vi.mocked(formatTime);
    timestamps.mockClear();
    serve(() => ws.push(ev("40-2", { type: "reply_delta", conversation_id: "c1", reply_id: "rz", text: "token" })));
    // 41 finished rows on screen; only the streaming row's timestamp was rendered again
    expect(timestamps).toHaveBeenCalledTimes(1);
  });
});

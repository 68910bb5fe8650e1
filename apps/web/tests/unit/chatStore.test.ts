import { describe, expect, it } from "vitest";
import { ChatStore, type Scheduler } from "@/lib/chatStore";
import type { ServerFrame } from "@/lib/protocol";
import { ev } from "./support/fakeSocket";

/** A scheduler the test fires by hand, like an animation frame. */
function manualFrames(): { scheduler: Scheduler; fire(): void; pending(): number } {
  let queued: (() => void)[] = [];
  return {
    scheduler: (flush) => {
      queued.push(flush);
      return () => {
        queued = queued.filter((f) => f !== flush);
      };
    },
    fire() {
      const run = queued;
      queued = [];
      for (const f of run) f();
    },
    pending: () => queued.length,
  };
}

const frames = [
  ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
  ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
  ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }),
  ev("3-0", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }),
] as ServerFrame[];

describe("the store", () => {
  it("folds many streamed tokens into one write per animation frame", () => {
    const raf = manualFrames();
    const store = new ChatStore(raf.scheduler, () => 0);
    let writes = 0;
    store.subscribe(() => writes++);
    for (const f of frames) store.receive(f);
    for (let i = 0; i < 100; i++) {
      store.receive(ev(`4-${i}`, { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "x" }) as ServerFrame);
    }
    expect(writes).toBe(0);
    expect(raf.pending()).toBe(1);
    raf.fire();
    expect(writes).toBe(1);
    expect(store.getState().conversations.c1!.pending!.reply!.text).toBe("x".repeat(100));
  });

  it("applies waiting frames before a user action, keeping their order", () => {
    const raf = manualFrames();
    const store = new ChatStore(raf.scheduler, () => 0);
    for (const f of frames.slice(0, 2)) store.receive(f);
    store.dispatch({ type: "conversation_selected", conversationId: "c1" });
    expect(store.getState().order).toEqual(["c1"]);
    expect(raf.pending()).toBe(0);
  });

  it("keeps unchanged messages identical, so memoised rows skip re-rendering", () => {
    const raf = manualFrames();
    const store = new ChatStore(raf.scheduler, () => 0);
    for (const f of frames) store.receive(f);
    raf.fire();
    const before = store.getState().conversations.c1!.messages[0];
    store.receive(ev("4-0", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "x" }) as ServerFrame);
    raf.fire();
    expect(store.getState().conversations.c1!.messages[0]).toBe(before);
  });
});

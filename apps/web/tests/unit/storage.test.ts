import { describe, expect, it } from "vitest";
import { reduce } from "@/lib/chatState";
import { initialState, type ChatState } from "@/lib/chatTypes";
import type { ServerFrame } from "@/lib/protocol";
import { loadChat, loadOutbox, saveChat, saveOutbox, savedFromState, STORAGE_KEYS, type StorageLike } from "@/lib/storage";
import { ev, welcome } from "./support/fakeSocket";

class MemoryStorage implements StorageLike {
  data = new Map<string, string>();
  getItem = (k: string) => this.data.get(k) ?? null;
  setItem = (k: string, v: string) => void this.data.set(k, v);
  removeItem = (k: string) => void this.data.delete(k);
}

function sampleState(): ChatState {
  return reduce(initialState, {
    type: "frames",
    now: 0,
    frames: [
      welcome(),
      ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
      ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
      ev("2-0", { type: "message_submitted", conversation_id: "c1", message_id: "m1", client_message_id: "k1", text: "Hi" }),
      ev("3-0", { type: "reply_started", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo", attempt: 1 }),
      ev("3-1", { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "Hel" }),
    ] as ServerFrame[],
  });
}

describe("session storage", () => {
  it("round-trips the session, cursor and history, including a reply in progress", () => {
    const storage = new MemoryStorage();
    const state = sampleState();
    expect(saveChat(storage, savedFromState(state))).toBe(true);
    const loaded = loadChat(storage)!;
    expect(loaded.session?.token).toBe("fresh-token");
    expect(loaded.cursor).toBe("3-1");
    expect(loaded.conversations.c1!.pending!.reply!.text).toBe("Hel");
    expect(loaded.conversations.c1!.messages).toEqual(state.conversations.c1!.messages);
  });

  it("round-trips the other versions of messages, and reads a history saved before branches as one path", () => {
    const storage = new MemoryStorage();
    const state = reduce(sampleState(), {
      type: "frames",
      now: 0,
      frames: [
        ev("4-0", { type: "reply_completed", conversation_id: "c1", reply_id: "r1", in_reply_to: "m1", model: "Demo" }),
        ev("5-0", { type: "message_edited", conversation_id: "c1", message_id: "m2", client_message_id: "k2", text: "Hey", edit_of: "m1", parent_id: null }),
      ] as ServerFrame[],
    });
    saveChat(storage, savedFromState(state));
    const loaded = loadChat(storage)!;
    expect(loaded.conversations.c1!.messages.map((m) => m.id)).toEqual(["m2"]);
    expect(loaded.conversations.c1!.branches).toEqual(state.conversations.c1!.branches);
    expect(loaded.conversations.c1!.branches.map((m) => [m.id, m.parentId])).toEqual([["m1", null], ["r1", "m1"]]);

    // As a client from before branches saved it: no parentId, no branches.
    const raw = JSON.parse(storage.getItem(STORAGE_KEYS.chat)!) as { conversations: Record<string, Record<string, unknown>> };
    const old = raw.conversations.c1!;
    old.messages = (old.branches as Record<string, unknown>[]).map(({ parentId: _, ...m }) => m);
    delete old.branches;
    old.pending = null;
    storage.setItem(STORAGE_KEYS.chat, JSON.stringify(raw));
    const legacy = loadChat(storage)!.conversations.c1!;
    expect(legacy.messages.map((m) => [m.id, m.parentId])).toEqual([["m1", null], ["r1", "m1"]]);
    expect(legacy.branches).toEqual([]);
  });

  it("ignores unparsable JSON and other versions", () => {
    const storage = new MemoryStorage();
    storage.setItem(STORAGE_KEYS.chat, "{oops");
    expect(loadChat(storage)).toBeNull();
    storage.setItem(STORAGE_KEYS.chat, JSON.stringify({ format: 99, session: { sessionId: "s", token: "t" } }));
    expect(loadChat(storage)).toBeNull();
    storage.setItem(STORAGE_KEYS.outbox, "[[[");
    expect(loadOutbox(storage)).toEqual([]);
  });

  it("keeps a valid session with a broken history, resuming from scratch (no cursor)", () => {
    const storage = new MemoryStorage();
    saveChat(storage, savedFromState(sampleState()));
    const raw = JSON.parse(storage.getItem(STORAGE_KEYS.chat)!) as Record<string, unknown>;
    (raw.conversations as Record<string, unknown>).c1 = { id: "c1", title: 5 };
    storage.setItem(STORAGE_KEYS.chat, JSON.stringify(raw));
    const loaded = loadChat(storage)!;
    expect(loaded.session?.token).toBe("fresh-token");
    expect(loaded.cursor).toBeNull();
    expect(loaded.order).toEqual([]);
  });

  it("falls back to the session alone when the history does not fit", () => {
    const storage = new MemoryStorage();
    let first = true;
    storage.setItem = (k, v) => {
      if (first) {
        first = false;
        throw new DOMException("full", "QuotaExceededError");
      }
      storage.data.set(k, v);
    };
    expect(saveChat(storage, savedFromState(sampleState()))).toBe(true);
    const loaded = loadChat(storage)!;
    expect(loaded.session?.token).toBe("fresh-token");
    expect(loaded.cursor).toBeNull();
  });

  it("round-trips the outbox, dropping a server's wait (it restarts with the page)", () => {
    const storage = new MemoryStorage();
    saveOutbox(storage, [
      { clientMessageId: "k9", conversationId: null, text: "later", createdAt: "2025-01-01T00:00:00Z", notBefore: 123, error: null },
    ]);
    expect(loadOutbox(storage)).toEqual([
      { clientMessageId: "k9", conversationId: null, text: "later", createdAt: "2025-01-01T00:00:00Z", notBefore: null, error: null },
    ]);
    saveOutbox(storage, []);
    expect(storage.getItem(STORAGE_KEYS.outbox)).toBeNull();
  });
});

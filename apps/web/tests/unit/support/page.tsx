import { act, render, type RenderResult } from "@testing-library/react";
import { StrictMode } from "react";
import { vi } from "vitest";
import { ChatPage } from "@/components/ChatPage";
import { ChatClient, type SessionApi } from "@/lib/chatClient";
import { ChatStore, immediateScheduler } from "@/lib/chatStore";
import type { StorageLike } from "@/lib/storage";
import { ev, FakeNetwork, FakeServer, type FakeWebSocket, welcome } from "./fakeSocket";

export class MemoryStorage implements StorageLike {
  data = new Map<string, string>();
  getItem = (k: string) => this.data.get(k) ?? null;
  setItem = (k: string, v: string) => void this.data.set(k, v);
  removeItem = (k: string) => void this.data.delete(k);
}

export interface PageRig {
  client: ChatClient;
  server: FakeServer;
  network: FakeNetwork;
  storage: MemoryStorage;
  api: SessionApi & { calls: number };
  view: RenderResult;
}

export interface PageOptions {
  storage?: MemoryStorage;
  strict?: boolean;
  server?: FakeServer;
  welcomed?: boolean;
}

/** Render the whole ChatPage against a fake server; frames apply synchronously. */
export function renderPage(options: PageOptions = {}): PageRig {
  const storage = options.storage ?? new MemoryStorage();
  if (options.welcomed !== false && !options.storage) storage.setItem("chatcore.web.v1.welcomed", "1");
  const server = options.server ?? new FakeServer();
  const network = new FakeNetwork();
  let n = 0;
  const api = {
    calls: 0,
    async create() {
      api.calls += 1;
      return { session_id: "sess_abcdefghijklmnop", conversation_id: "c1", token: "t0", expires_at: null };
    },
  };
  const client = new ChatClient({ api, ids: () => `id-${++n}`, store: new ChatStore(immediateScheduler, Date.now) });
  const getStorage = () => storage;
  const page = (
    <ChatPage
      client={client}
      getStorage={getStorage}
      socket={{ createSocket: server.create, network, random: () => 0, backoff: { baseMs: 1000, maxMs: 8000, minMs: 100 } }}
    />
  );
  const view = render(options.strict ? <StrictMode>{page}</StrictMode> : page);
  return { client, server, network, storage, api, view };
}

export async function tick(ms = 0): Promise<void> {
  await act(async () => {
    await vi.advanceTimersByTimeAsync(ms);
  });
}

/** Run a server action inside act (frames update React state). */
export function serve(fn: () => void): void {
  act(fn);
}

export const opening = [
  ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
  ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
];

/** Connect the page's socket and serve a fresh session (welcome, opening events, caught up). */
export async function connectFresh(rig: PageRig): Promise<FakeWebSocket> {
  await tick();
  const ws = rig.server.last;
  serve(() => {
    ws.accept();
    ws.push(welcome({ resume: "events" }));
    for (const f of opening) ws.push(f);
    ws.push({ type: "caught_up", cursor: "1-1" });
  });
  return ws;
}

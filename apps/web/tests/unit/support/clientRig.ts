import { vi } from "vitest";
import { ChatClient, type SessionApi } from "@/lib/chatClient";
import { ChatStore, immediateScheduler } from "@/lib/chatStore";
import type { ExportApi } from "@/lib/exports";
import { connectSocket, type SocketHandle } from "@/lib/socket";
import { ev, FakeNetwork, FakeServer, type FakeWebSocket, welcome } from "./fakeSocket";

/** A ChatClient wired to a fake server through the real socket core (frames apply at once). */
export interface Rig {
  client: ChatClient;
  server: FakeServer;
  network: FakeNetwork;
  handle: SocketHandle;
  api: SessionApi & { calls: number };
}

export function rig(options: { failCreate?: Error; exports?: ExportApi } = {}): Rig {
  let n = 0;
  const api = {
    calls: 0,
    async create() {
      api.calls += 1;
      if (options.failCreate) throw options.failCreate;
      return { session_id: "sess_abcdefghijklmnop", conversation_id: "c1", token: "t0", expires_at: null };
    },
  };
  const client = new ChatClient({
    api,
    ids: () => `id-${++n}`,
    store: new ChatStore(immediateScheduler, Date.now),
    ...(options.exports ? { exports: options.exports } : {}),
  });
  client.store.dispatch({ type: "restored", saved: null, outbox: [], welcomeSeen: true });
  const server = new FakeServer();
  const network = new FakeNetwork();
  const handle = connectSocket({
    url: () => "ws://x/ws",
    prepareHello: client.prepareHello,
    onFrame: client.receive,
    onStatus: client.onStatus,
    createSocket: server.create,
    network,
    random: () => 0,
    backoff: { baseMs: 1000, maxMs: 8000, minMs: 100 },
  });
  client.attach(handle);
  return { client, server, network, handle, api };
}

export const opening = [
  ev("1-0", { type: "session_opened", session_id: "sess_abcdefghijklmnop" }),
  ev("1-1", { type: "conversation_started", conversation_id: "c1", title: "New chat" }),
];

/** Let the deferred connect and the hello's promise run, then accept the socket. */
export async function accept(r: Rig): Promise<FakeWebSocket> {
  await vi.advanceTimersByTimeAsync(0);
  const ws = r.server.last;
  ws.accept();
  return ws;
}

/** Serve a fresh session: welcome, its opening events, caught up. */
export async function serveFresh(r: Rig): Promise<FakeWebSocket> {
  const ws = await accept(r);
  ws.push(welcome({ resume: "events" }));
  for (const f of opening) ws.push(f);
  ws.push({ type: "caught_up", cursor: "1-1" });
  return ws;
}


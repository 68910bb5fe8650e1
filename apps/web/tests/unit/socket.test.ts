import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { HelloFrame, ServerFrame } from "@/lib/protocol";
import { connectSocket, SessionGoneError, type SocketHandle, type SocketOptions, type SocketStatus } from "@/lib/socket";
import { ev, FakeNetwork, FakeServer, LIMITS, welcome } from "./support/fakeSocket";

const hello: HelloFrame = { type: "hello", protocol: 1, token: "secret-token", last_event_id: "17-3" };

interface Harness {
  server: FakeServer;
  network: FakeNetwork;
  statuses: SocketStatus[];
  frames: ServerFrame[];
  handle: SocketHandle;
  status(): SocketStatus;
}

function start(overrides: Partial<SocketOptions> = {}): Harness {
  const server = new FakeServer();
  const network = new FakeNetwork();
  const statuses: SocketStatus[] = [];
  const frames: ServerFrame[] = [];
  const handle = connectSocket({
    url: () => "ws://chat.test/ws",
    prepareHello: () => Promise.resolve(hello),
    onFrame: (f) => frames.push(f),
    onStatus: (s) => statuses.push(s),
    createSocket: server.create,
    network,
    random: () => 0.5,
    backoff: { baseMs: 1000, maxMs: 8000, minMs: 0 },
    heartbeat: { idleMs: 20_000, deadMs: 5_000 },
    ...overrides,
  });
  return { server, network, statuses, frames, handle, status: () => statuses[statuses.length - 1]! };
}

/** Let the deferred connect run and the hello promise resolve. */
async function settle(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

async function connected(h: Harness): Promise<void> {
  await settle();
  h.server.last.accept();
  h.server.last.push(welcome());
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("socket core: connecting", () => {
  it("sends hello first, with the token and the resume cursor, never the token in the URL", async () => {
    const h = start();
    await settle();
    const ws = h.server.last;
    expect(ws.url).toBe("ws://chat.test/ws");
    expect(ws.url).not.toContain("secret-token");
    ws.accept();
    expect(ws.frames()).toEqual([hello]);
  });

  it("reports open only after the server's welcome", async () => {
    const h = start();
    await settle();
    h.server.last.accept();
    expect(h.status().kind).toBe("connecting");
    h.server.last.push(welcome());
    expect(h.status().kind).toBe("open");
    expect(h.handle.isOpen()).toBe(true);
  });

  it("queues frames sent before the welcome and sends them after it, in order", async () => {
    const h = start();
    h.handle.send({ type: "set_profile", display_name: "Ada", language: null });
    h.handle.send({ type: "cancel", conversation_id: "c1" });
    await settle();
    const ws = h.server.last;
    ws.accept();
    expect(ws.frames().map((f) => f.type)).toEqual(["hello"]);
    ws.push(welcome());
    expect(ws.frames().map((f) => f.type)).toEqual(["hello", "set_profile", "cancel"]);
  });

  it("does not pass pongs or malformed frames on", async () => {
    const h = start();
    await connected(h);
    h.server.last.push({ type: "pong", nonce: "1" });
    h.server.last.pushRaw("{not json");
    h.server.last.push({ type: "mystery" });
    expect(h.frames.map((f) => f.type)).toEqual(["welcome"]);
  });
});

describe("socket core: reconnecting", () => {
  it("backs off exponentially with jitter, capped, with one timer at a time", async () => {
    const randoms = [0.5, 1, 0.25, 1, 1, 1];
    const h = start({ random: () => randoms.shift() ?? 1 });
    await settle();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      h.server.last.drop(1006);
      const status = h.status();
      expect(status.kind).toBe("reconnecting");
      if (status.kind !== "reconnecting") return;
      delays.push(status.retryAt - Date.now());
      expect(vi.getTimerCount()).toBe(1);
      await settle(status.retryAt - Date.now());
    }
    // ceilings 1000, 2000, 4000, 8000 (cap), 8000, 8000 scaled by the injected randoms
    expect(delays).toEqual([500, 2000, 1000, 8000, 8000, 8000]);
    expect(h.server.sockets).toHaveLength(7);
  });

  it("resets the backoff only after a welcome, not when a socket merely opens", async () => {
    const h = start({ random: () => 1 });
    await settle();
    h.server.last.accept();
    h.server.last.drop(1006);
    await settle(1000);
    h.server.last.accept();
    h.server.last.drop(1006);
    const second = h.status();
    expect(second.kind === "reconnecting" && second.retryAt - Date.now()).toBe(2000);
    await settle(2000);
    h.server.last.accept();
    h.server.last.push(welcome());
    h.server.last.drop(1001);
    const afterWelcome = h.status();
    expect(afterWelcome.kind === "reconnecting" && afterWelcome.retryAt - Date.now()).toBe(1000);
  });

  it("treats going-away, try-again and abnormal closes as blips and reconnects", async () => {
    for (const code of [1001, 1006, 1011, 1013, 1009]) {
      const h = start();
      await connected(h);
      h.server.last.drop(code);
      expect(h.status().kind).toBe("reconnecting");
      h.handle.dispose();
    }
  });

  it("retry now skips the wait, leaving a single timer and a single new socket", async () => {
    const h = start();
    await settle();
    h.server.last.drop(1006);
    expect(h.status().kind).toBe("reconnecting");
    h.handle.retryNow();
    await settle();
    expect(h.server.sockets).toHaveLength(2);
    // the cancelled backoff timer (500 ms) did not fire a third connect
    await settle(15_000);
    expect(h.server.sockets).toHaveLength(2);
  });

  it("ignores a replaced socket's late events", async () => {
    const h = start();
    await connected(h);
    const old = h.server.last;
    old.drop(1006);
    await settle(10_000);
    const fresh = h.server.last;
    expect(fresh).not.toBe(old);
    fresh.accept();
    fresh.push(welcome());
    const before = h.frames.length;
    old.onmessage?.({ data: JSON.stringify({ type: "caught_up", cursor: "1-0" }) });
    expect(h.frames.length).toBe(before);
    expect(h.status().kind).toBe("open");
  });

  it("retries with backoff when preparing the hello fails (server unreachable)", async () => {
    const h = start({ prepareHello: () => Promise.reject(new Error("fetch failed")) });
    await settle();
    expect(h.server.sockets).toHaveLength(0);
    expect(h.status()).toMatchObject({ kind: "reconnecting", reason: "fetch failed" });
  });
});

describe("socket core: expired sessions versus network blips", () => {
  it("close code 4001 means the session is gone: no reconnect", async () => {
    const h = start();
    await connected(h);
    h.server.last.drop(4001, "token expired");
    expect(h.status()).toEqual({ kind: "expired", reason: "token expired" });
    await settle(120_000);
    expect(h.server.sockets).toHaveLength(1);
  });

  it("an unauthorized or token_expired error frame means the session is gone", async () => {
    for (const code of ["unauthorized", "token_expired"]) {
      const h = start();
      await settle();
      h.server.last.accept();
      h.server.last.push({ type: "error", code, message: "session expired" });
      expect(h.status().kind).toBe("expired");
      await settle(120_000);
      expect(h.server.sockets).toHaveLength(1);
      h.handle.dispose();
    }
  });

  it("other error frames leave the connection alone", async () => {
    const h = start();
    await connected(h);
    h.server.last.push({ type: "error", code: "rate_limited", message: "slow down", retry_after: 2 });
    expect(h.status().kind).toBe("open");
  });

  it("a SessionGoneError from prepareHello is expired, not retried", async () => {
    const h = start({ prepareHello: () => Promise.reject(new SessionGoneError("refused")) });
    await settle(60_000);
    expect(h.status().kind).toBe("expired");
  });

  it("close 4003 (unsupported protocol) stops for good: this page is too old", async () => {
    const h = start();
    await connected(h);
    h.server.last.drop(4003, "this server speaks protocol 2");
    expect(h.status()).toEqual({ kind: "incompatible", reason: "this server speaks protocol 2" });
    await settle(120_000);
    expect(h.server.sockets).toHaveLength(1);
  });

  it("close 4002 (unknown cursor) forgets the cursor and reconnects", async () => {
    const onBadCursor = vi.fn();
    const h = start({ onBadCursor });
    await connected(h);
    h.server.last.drop(4002);
    expect(onBadCursor).toHaveBeenCalledTimes(1);
    expect(h.status().kind).toBe("reconnecting");
    await settle(1000);
    expect(h.server.sockets).toHaveLength(2);
  });

  it("after expiry, retry now starts over (a new session)", async () => {
    const h = start();
    await connected(h);
    h.server.last.drop(4001);
    h.handle.retryNow();
    await settle();
    expect(h.server.sockets).toHaveLength(2);
    expect(h.status().kind).toBe("connecting");
  });
});

describe("socket core: heartbeat", () => {
  it("pings after a silence, and stays up when anything comes back", async () => {
    const h = start();
    await connected(h);
    const ws = h.server.last;
    await settle(19_999);
    expect(ws.framesOfType("ping")).toHaveLength(0);
    await settle(1);
    expect(ws.framesOfType("ping")).toHaveLength(1);
    ws.push({ type: "pong" });
    await settle(4_999 + 1);
    expect(ws.closedByClient).toBeNull();
    expect(h.status().kind).toBe("open");
  });

  it("keeps a quiet client alive with pings even while the server keeps talking", async () => {
    const h = start();
    await connected(h);
    const ws = h.server.last;
    ws.autoPong = true;
    for (let i = 0; i < 10; i++) {
      await settle(15_000);
      ws.push({ type: "caught_up", cursor: `${i + 1}-0` });
    }
    // 150 s without a client frame would hit the server's idle timeout: one ping per 20 s
    expect(ws.framesOfType("ping").length).toBeGreaterThanOrEqual(6);
    expect(ws.closedByClient).toBeNull();
    expect(h.status().kind).toBe("open");
  });

  it("a receive-only client pings every idle_timeout / 3 seconds the welcome announces", async () => {
    const h = start(); // idleMs 20 s: longer than the server's 15 s idle timeout allows
    await settle();
    const ws = h.server.last;
    ws.accept();
    ws.autoPong = true;
    ws.push(welcome({ limits: { ...LIMITS, idle_timeout: 15 } }));
    const welcomedAt = Date.now();
    // A long reply streams in: a frame every second for a minute, the client sends nothing.
    for (let i = 0; i < 60; i++) {
      await settle(1_000);
      ws.push(ev(`${i + 2}-0`, { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "x" }));
    }
    const pingTimes = ws.sentAt.filter((_, n) => ws.frames()[n]!.type === "ping");
    const sends = [welcomedAt, ...pingTimes, Date.now()];
    const gaps = sends.slice(1).map((t, n) => t - sends[n]!);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(5_000);
    expect(pingTimes.length).toBeGreaterThanOrEqual(11);
    expect(ws.closedByClient).toBeNull();
    expect(h.status().kind).toBe("open");
  });

  it("falls back to its own interval when the welcome announces no idle timeout", async () => {
    const h = start();
    await settle();
    const ws = h.server.last;
    ws.accept();
    ws.autoPong = true;
    const { idle_timeout: _unused, ...older } = LIMITS;
    void _unused;
    ws.push(welcome({ limits: older }));
    for (let i = 0; i < 40; i++) {
      await settle(1_000);
      ws.push(ev(`${i + 2}-0`, { type: "reply_delta", conversation_id: "c1", reply_id: "r1", text: "x" }));
    }
    expect(ws.framesOfType("ping")).toHaveLength(2); // at 20 s and 40 s
  });

  it("does not ping while the client itself is sending and the server answering", async () => {
    const h = start();
    await connected(h);
    const ws = h.server.last;
    for (let i = 0; i < 10; i++) {
      await settle(15_000);
      h.handle.send({ type: "set_profile", display_name: null, language: null });
      ws.push({ type: "ack", for_type: "set_profile", cursor: null });
    }
    expect(ws.framesOfType("ping")).toHaveLength(0);
  });

  it("drops a silent peer after the dead timeout and reconnects", async () => {
    const h = start();
    await connected(h);
    const ws = h.server.last;
    await settle(20_000);
    expect(ws.framesOfType("ping")).toHaveLength(1);
    await settle(5_000);
    expect(ws.closedByClient).not.toBeNull();
    expect(h.status()).toMatchObject({ kind: "reconnecting", reason: "no answer from the server" });
    await settle(10_000);
    expect(h.server.sockets).toHaveLength(2);
  });

  it("gives up on a socket that never opens", async () => {
    const h = start();
    await settle();
    await settle(20_000);
    expect(h.server.last.closedByClient).not.toBeNull();
    expect(h.status().kind).toBe("reconnecting");
  });
});

describe("socket core: offline and lifecycle", () => {
  it("waits while offline and connects at once when back online", async () => {
    const h = start();
    h.network.online = false;
    await settle(60_000);
    expect(h.server.sockets).toHaveLength(0);
    expect(h.status().kind).toBe("offline");
    h.network.set(true);
    await settle();
    expect(h.server.sockets).toHaveLength(1);
  });

  it("retry now tries even when the browser claims to be offline", async () => {
    const h = start();
    h.network.online = false;
    await settle();
    expect(h.status().kind).toBe("offline");
    h.handle.retryNow();
    await settle();
    expect(h.server.sockets).toHaveLength(1);
  });

  it("probes an open socket when the browser reports offline instead of dropping it", async () => {
    const h = start();
    await connected(h);
    h.network.set(false);
    expect(h.server.last.framesOfType("ping")).toHaveLength(1);
    h.server.last.push({ type: "pong" });
    await settle(5_000);
    expect(h.status().kind).toBe("open");
  });

  it("dispose closes the socket and stops every timer", async () => {
    const h = start();
    await connected(h);
    h.handle.dispose();
    expect(h.server.last.closedByClient).toEqual({ code: 1000, reason: "client closed" });
    expect(vi.getTimerCount()).toBe(0);
    await settle(120_000);
    expect(h.server.sockets).toHaveLength(1);
  });

  it("a dispose before the deferred connect creates no socket at all (StrictMode)", async () => {
    const first = start();
    first.handle.dispose();
    await settle(1000);
    expect(first.server.sockets).toHaveLength(0);
  });

  it("a dispose while the hello is being prepared creates no socket", async () => {
    let resolve: (h: HelloFrame) => void = () => {};
    const h = start({ prepareHello: () => new Promise((r) => (resolve = r)) });
    await settle();
    h.handle.dispose();
    resolve(hello);
    await settle();
    expect(h.server.sockets).toHaveLength(0);
  });
});

/**
 * The socket core: one logical connection to `/ws` that keeps itself alive.
 *
 * `connectSocket` is a plain function returning a handle with `dispose()`, so a React effect
 * can own it and StrictMode's mount/unmount/mount leaves exactly one socket behind (the first
 * connect is deferred by a timer that the first unmount cancels before any socket exists).
 *
 * What it guarantees:
 * - every connection starts with `hello` (token and resume cursor built fresh for each
 *   attempt by `prepareHello`), and frames given to `send` before the server's `welcome` are
 *   queued and sent, in order, right after it;
 * - at most one socket and at most one reconnect timer exist at any time; frames and close
 *   events of a socket that was replaced are ignored;
 * - reconnects back off exponentially with full jitter (random and timers injectable), and
 *   the backoff resets only after a `welcome` (a server that accepts and drops is not a
 *   success);
 * - when nothing has arrived for `idleMs`, or nothing was sent for the send interval (the
 *   welcome's `limits.idle_timeout / 3`, at most `idleMs`), a `ping` goes out, however much
 *   the server is sending: the server closes a connection that sent it nothing for
 *   `idle_timeout` (4008). When still nothing arrives within `deadMs` of a ping the socket is
 *   dropped and replaced (a half-open TCP connection never hangs us);
 * - only close code 4001 or an `unauthorized` / `token_expired` / `session_not_found` error
 *   frame means the session is gone ("expired"); 4003 means this client is too old
 *   ("incompatible"); 4002 means our cursor is unknown (resume without it); every other close
 *   is a blip and is retried;
 * - while the browser says it is offline no attempt is made; coming back online retries at
 *   once.
 */

import { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from "./backoff";
import {
  CloseCode,
  parseServerFrame,
  SESSION_GONE_CODES,
  type ClientFrame,
  type HelloFrame,
  type ServerFrame,
} from "./protocol";

/** The part of the browser's WebSocket the core uses (a fake implements it in tests). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export const WS_OPEN = 1;

export type TimerId = ReturnType<typeof setTimeout>;

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
  now(): number;
}

export interface NetworkMonitor {
  isOnline(): boolean;
  /** Calls `listener` when the browser goes online or offline; returns an unsubscribe. */
  subscribe(listener: (online: boolean) => void): () => void;
}

export type SocketStatus =
  | { kind: "idle" }
  | { kind: "connecting"; attempt: number }
  | { kind: "open" }
  | { kind: "reconnecting"; attempt: number; retryAt: number; reason: string }
  | { kind: "offline" }
  | { kind: "expired"; reason: string }
  | { kind: "incompatible"; reason: string }
  | { kind: "closed" };

export interface HeartbeatPolicy {
  /** Silence (no frame received) after which a ping is sent, ms; also the longest the client
   * stays without sending, unless the server's `idle_timeout / 3` is shorter. */
  idleMs: number;
  /** After the ping, how long to wait for any frame before giving the socket up, ms. */
  deadMs: number;
}

export const DEFAULT_HEARTBEAT: HeartbeatPolicy = { idleMs: 20_000, deadMs: 10_000 };

/** Thrown by `prepareHello` when there is no session to resume and none can be made. */
export class SessionGoneError extends Error {}

export interface SocketOptions {
  url: () => string;
  /** Builds the hello of one attempt (may create a session first). A rejection is a failed
   * attempt (retried with backoff) unless it is a `SessionGoneError` (expired). */
  prepareHello: () => Promise<HelloFrame>;
  onFrame: (frame: ServerFrame) => void;
  onStatus: (status: SocketStatus) => void;
  /** The server refused our resume cursor (close 4002): forget it before the next hello. */
  onBadCursor?: () => void;
  createSocket?: (url: string) => WebSocketLike;
  timers?: Timers;
  random?: () => number;
  backoff?: BackoffPolicy;
  heartbeat?: HeartbeatPolicy;
  network?: NetworkMonitor;
  /** Delay of the very first connect, ms (0 still defers it past a StrictMode remount). */
  connectDelayMs?: number;
}

export interface SocketHandle {
  /** Sends now if the session is open, otherwise queues until the next `welcome`. */
  send(frame: ClientFrame): void;
  /** Sends only if the session is open right now; returns whether it did. */
  sendIfOpen(frame: ClientFrame): boolean;
  isOpen(): boolean;
  /** Skip the wait: connect now (also restarts after "expired", e.g. with a new session). */
  retryNow(): void;
  dispose(): void;
}

export const browserTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  now: () => Date.now(),
};

export function browserNetwork(): NetworkMonitor {
  return {
    isOnline: () => (typeof navigator === "undefined" ? true : navigator.onLine !== false),
    subscribe(listener) {
      if (typeof window === "undefined") return () => {};
      const online = () => listener(true);
      const offline = () => listener(false);
      window.addEventListener("online", online);
      window.addEventListener("offline", offline);
      return () => {
        window.removeEventListener("online", online);
        window.removeEventListener("offline", offline);
      };
    },
  };
}

const alwaysOnline: NetworkMonitor = { isOnline: () => true, subscribe: () => () => {} };

export function connectSocket(options: SocketOptions): SocketHandle {
  const timers = options.timers ?? browserTimers;
  const random = options.random ?? Math.random;
  const policy = options.backoff ?? DEFAULT_BACKOFF;
  const heartbeat = options.heartbeat ?? DEFAULT_HEARTBEAT;
  const network = options.network ?? alwaysOnline;
  const createSocket =
    options.createSocket ?? ((url: string) => new WebSocket(url) as unknown as WebSocketLike);

  let socket: WebSocketLike | null = null;
  let welcomed = false;
  let disposed = false;
  let expired = false;
  /** Consecutive failed attempts since the last welcome. */
  let failures = 0;
  /** Bumped for every attempt: async steps of an older attempt check it and give up. */
  let generation = 0;
  let reconnectTimer: TimerId | null = null;
  let silenceTimer: TimerId | null = null;
  let pingOutstanding = false;
  let pingSentAt = 0;
  let lastReceivedAt = 0;
  let lastSentAt = 0;
  /** The longest gap between two frames sent: `idleMs` until a welcome announces limits. */
  let sendEveryMs = heartbeat.idleMs;
  const queue: ClientFrame[] = [];
  let status: SocketStatus = { kind: "idle" };

  function setStatus(next: SocketStatus): void {
    status = next;
    options.onStatus(next);
  }

  function clearReconnectTimer(): void {
    if (reconnectTimer !== null) {
      timers.clearTimeout(reconnectTimer);
      reconnectTimer = null;
    }
  }

  function clearSilenceTimer(): void {
    if (silenceTimer !== null) {
      timers.clearTimeout(silenceTimer);
      silenceTimer = null;
    }
  }

  /**
   * The heartbeat, one timer: when nothing has come from the server for `idleMs`, or nothing
   * has gone to it for `sendEveryMs` (the server closes a connection that sent nothing for
   * its `idle_timeout`, however much it received), a ping goes out; when nothing at all comes
   * back within `deadMs` of it, the socket is given up. Before the welcome, `idleMs` of
   * silence is a connect timeout.
   */
  function armHeartbeat(): void {
    clearSilenceTimer();
    if (socket === null) return;
    const due = pingOutstanding
      ? pingSentAt + heartbeat.deadMs
      : Math.min(lastReceivedAt + heartbeat.idleMs, lastSentAt + sendEveryMs);
    silenceTimer = timers.setTimeout(checkHeartbeat, Math.max(0, due - timers.now()));
  }

  function checkHeartbeat(): void {
    silenceTimer = null;
    const ws = socket;
    if (ws === null) return;
    const now = timers.now();
    if (pingOutstanding) {
      if (now - pingSentAt >= heartbeat.deadMs) {
        drop("no answer from the server");
        return;
      }
    } else if (!welcomed || ws.readyState !== WS_OPEN) {
      if (now - lastReceivedAt >= heartbeat.idleMs) {
        drop("no answer from the server");
        return;
      }
    } else if (now - lastReceivedAt >= heartbeat.idleMs || now - lastSentAt >= sendEveryMs) {
      sendPing(ws);
    }
    armHeartbeat();
  }

  function sendPing(ws: WebSocketLike): void {
    pingOutstanding = true;
    pingSentAt = timers.now();
    transmit(ws, { type: "ping", nonce: String(pingSentAt) });
  }

  function transmit(ws: WebSocketLike, frame: ClientFrame | HelloFrame): void {
    ws.send(JSON.stringify(frame));
    lastSentAt = timers.now();
  }

  /** Forget the current socket without waiting for its close handshake. */
  function detach(code: number, reason: string): void {
    const ws = socket;
    socket = null;
    welcomed = false;
    clearSilenceTimer();
    if (ws === null) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Closing a socket that never opened may throw in some browsers; it is gone either way.
    }
  }

  /** The connection is lost or unusable: replace it after a backoff delay. */
  function drop(reason: string): void {
    detach(CloseCode.clientDeadPeer, reason);
    scheduleReconnect(reason);
  }

  function scheduleReconnect(reason: string): void {
    if (disposed || expired) return;
    clearReconnectTimer();
    if (!network.isOnline()) {
      setStatus({ kind: "offline" });
      return;
    }
    const delay = backoffDelay(failures, random, policy);
    failures += 1;
    setStatus({ kind: "reconnecting", attempt: failures, retryAt: timers.now() + delay, reason });
    reconnectTimer = timers.setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  function markExpired(reason: string): void {
    stopFor({ kind: "expired", reason });
  }

  /** Stop for good (until retryNow): the server said retrying as is cannot work. */
  function stopFor(final: Extract<SocketStatus, { kind: "expired" | "incompatible" }>): void {
    expired = true;
    clearReconnectTimer();
    detach(CloseCode.normal, final.kind);
    setStatus(final);
  }

  /** `force`: try even if the browser says it is offline (the user asked; the flag can lie). */
  function connect(force = false): void {
    if (disposed) return;
    clearReconnectTimer();
    detach(CloseCode.normal, "replaced");
    expired = false;
    if (!force && !network.isOnline()) {
      setStatus({ kind: "offline" });
      return;
    }
    const attempt = ++generation;
    setStatus({ kind: "connecting", attempt: failures + 1 });
    options.prepareHello().then(
      (hello) => {
        if (disposed || attempt !== generation) return;
        open(hello, attempt);
      },
      (error: unknown) => {
        if (disposed || attempt !== generation) return;
        if (error instanceof SessionGoneError) {
          markExpired(error.message);
          return;
        }
        scheduleReconnect(error instanceof Error ? error.message : "could not reach the server");
      },
    );
  }

  function open(hello: HelloFrame, attempt: number): void {
    let ws: WebSocketLike;
    try {
      ws = createSocket(options.url());
    } catch (error) {
      scheduleReconnect(error instanceof Error ? error.message : "could not open a socket");
      return;
    }
    socket = ws;
    lastReceivedAt = lastSentAt = timers.now();
    pingOutstanding = false;
    sendEveryMs = heartbeat.idleMs;
    armHeartbeat();
    const current = () => !disposed && socket === ws && attempt === generation;

    ws.onopen = () => {
      if (!current()) return;
      transmit(ws, hello);
    };
    ws.onmessage = (event) => {
      if (!current()) return;
      lastReceivedAt = timers.now();
      if (pingOutstanding) {
        pingOutstanding = false;
        armHeartbeat();
      }
      const frame = parseServerFrame(event.data);
      if (frame === null || frame.type === "pong") return;
      if (frame.type === "welcome") {
        welcomed = true;
        failures = 0;
        sendEveryMs = sendInterval(heartbeat, frame.limits.idle_timeout);
        armHeartbeat();
        setStatus({ kind: "open" });
        options.onFrame(frame);
        flushQueue();
        return;
      }
      if (frame.type === "error" && SESSION_GONE_CODES.has(frame.code)) {
        options.onFrame(frame);
        if (current()) markExpired(frame.message || frame.code);
        return;
      }
      options.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (!current()) return;
      if (event.code === CloseCode.unauthorized) {
        markExpired(event.reason || "the session has expired");
        return;
      }
      if (event.code === CloseCode.unsupportedProtocol) {
        stopFor({ kind: "incompatible", reason: event.reason || "this page is out of date" });
        return;
      }
      if (event.code === CloseCode.badCursor) {
        // Our cursor is not in the server's log (it lost data, or ours is wrong): start over
        // from a snapshot, which replaces the local history.
        options.onBadCursor?.();
      }
      socket = null;
      welcomed = false;
      clearSilenceTimer();
      scheduleReconnect(describeClose(event.code, event.reason));
    };
    ws.onerror = () => {
      // A close event always follows an error; the reconnect is decided there.
    };
  }

  function flushQueue(): void {
    const ws = socket;
    while (queue.length > 0 && ws !== null && welcomed && ws.readyState === WS_OPEN) {
      transmit(ws, queue.shift()!);
    }
  }

  function sendIfOpen(frame: ClientFrame): boolean {
    const ws = socket;
    if (ws === null || !welcomed || ws.readyState !== WS_OPEN) return false;
    transmit(ws, frame);
    return true;
  }

  const unsubscribeNetwork = network.subscribe((online) => {
    if (disposed || expired) return;
    if (online) {
      if (socket === null) connect();
      return;
    }
    if (socket === null) {
      clearReconnectTimer();
      setStatus({ kind: "offline" });
      return;
    }
    // The socket may still work (a local server); probe it now instead of trusting the flag.
    const ws = socket;
    if (welcomed && ws.readyState === WS_OPEN && !pingOutstanding) {
      sendPing(ws);
      armHeartbeat();
    }
  });

  reconnectTimer = timers.setTimeout(() => {
    reconnectTimer = null;
    connect();
  }, options.connectDelayMs ?? 0);

  return {
    send(frame) {
      if (!sendIfOpen(frame)) queue.push(frame);
    },
    sendIfOpen,
    isOpen: () => socket !== null && welcomed,
    retryNow() {
      if (disposed) return;
      if (status.kind === "open" || status.kind === "connecting") return;
      failures = expired ? 0 : failures;
      connect(true);
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      generation += 1;
      clearReconnectTimer();
      detach(CloseCode.normal, "client closed");
      unsubscribeNetwork();
      queue.length = 0;
      setStatus({ kind: "closed" });
    },
  };
}

/** How often an open connection must send, ms: a third of the server's idle timeout (so a
 * ping late by a whole interval still arrives in time), never longer than `idleMs`. */
export function sendInterval(heartbeat: HeartbeatPolicy, idleTimeoutSeconds: number | undefined): number {
  if (typeof idleTimeoutSeconds !== "number" || !(idleTimeoutSeconds > 0)) return heartbeat.idleMs;
  return Math.min(heartbeat.idleMs, (idleTimeoutSeconds * 1000) / 3);
}

function describeClose(code: number, reason: string): string {
  if (reason) return reason;
  switch (code) {
    case CloseCode.goingAway:
      return "the server is restarting";
    case CloseCode.tryAgainLater:
      return "the server is busy";
    case CloseCode.frameTooBig:
      return "a message was too large for the server";
    case CloseCode.idleTimeout:
      return "the connection was idle";
    case CloseCode.badCursor:
      return "resuming from a fresh copy of the conversation";
    default:
      return "the connection to the server was lost";
  }
}

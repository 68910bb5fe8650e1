import type { ClientFrame } from "@/lib/protocol";
import type { NetworkMonitor, WebSocketLike } from "@/lib/socket";

/** A WebSocket the test drives by hand: open it, push server frames, close it from the server. */
export class FakeWebSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: string[] = [];
  /** When each frame of `sent` was sent (`Date.now()`, so fake timers' clock). */
  readonly sentAt: number[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;
  /** Answer pings like the real server does (asynchronously). */
  autoPong = false;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error(`send on a socket in state ${this.readyState}`);
    this.sent.push(data);
    this.sentAt.push(Date.now());
    if (this.autoPong && (JSON.parse(data) as { type: string }).type === "ping") {
      queueMicrotask(() => {
        if (this.readyState === 1) this.push({ type: "pong" });
      });
    }
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // --- what the server does ---

  accept(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  push(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  pushRaw(data: string): void {
    this.onmessage?.({ data });
  }

  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  frames(): ClientFrame[] {
    return this.sent.map((s) => JSON.parse(s) as ClientFrame);
  }

  framesOfType<T extends ClientFrame["type"]>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.frames().filter((f): f is Extract<ClientFrame, { type: T }> => f.type === type);
  }
}

/** Records every socket the code under test creates. */
export class FakeServer {
  readonly sockets: FakeWebSocket[] = [];
  create = (url: string): WebSocketLike => {
    const ws = new FakeWebSocket(url);
    this.sockets.push(ws);
    return ws;
  };
  get last(): FakeWebSocket {
    const ws = this.sockets[this.sockets.length - 1];
    if (!ws) throw new Error("no socket was created");
    return ws;
  }
}

export class FakeNetwork implements NetworkMonitor {
  online = true;
  private listeners = new Set<(online: boolean) => void>();
  isOnline = () => this.online;
  subscribe = (listener: (online: boolean) => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };
  set(online: boolean): void {
    this.online = online;
    for (const l of [...this.listeners]) l(online);
  }
}

export const LIMITS = { max_message_chars: 4000, max_frame_bytes: 65536, messages_per_minute: 20, idle_timeout: 90 };

export function welcome(overrides: Record<string, unknown> = {}): object {
  return {
    type: "welcome",
    protocol: 1,
    session_id: "sess_abcdefghijklmnop",
    token: "fresh-token",
    token_expires_at: "2030-01-01T00:00:00Z",
    model: "Demo Model",
    limits: LIMITS,
    resume: "snapshot",
    ...overrides,
  };
}

export const AT = "2025-01-01T12:00:00Z";

export function ev(cursor: string, event: Record<string, unknown>): object {
  return { type: "event", cursor, event: { at: AT, ...event } };
}

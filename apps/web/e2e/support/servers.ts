/**
 * Real servers for the end-to-end tests: `chatcore serve` (the Python API, serving the built
 * client from apps/web/out) and, for the tests that restart it, a private `redis-server`.
 * Everything listens on 127.0.0.1 on free ports and is stopped by its owner.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO_ROOT = path.resolve(WEB_DIR, "..", "..");
const LOG_DIR = path.join(WEB_DIR, "test-results", "logs");

/** The demo model's pause between word-sized tokens: a reply takes several seconds. */
export const DEMO_DELAY = process.env.CHATCORE_E2E_DEMO_DELAY ?? "0.04";

export function pythonExecutable(): string {
  if (process.env.CHATCORE_PYTHON) return process.env.CHATCORE_PYTHON;
  const venv = path.join(REPO_ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("no port"));
      });
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, probe: () => Promise<boolean>, child: ChildProcess, timeoutMs = 45_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode} before it was ready`);
    if (await probe()) return;
    await sleep(150);
  }
  throw new Error(`${what} was not ready after ${timeoutMs} ms`);
}

function stopProcess(child: ChildProcess, signal: NodeJS.Signals, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

function logStream(name: string) {
  mkdirSync(LOG_DIR, { recursive: true });
  return createWriteStream(path.join(LOG_DIR, `${name}.log`), { flags: "a" });
}

export class RedisServer {
  private child: ChildProcess | null = null;
  private readonly dir = mkdtempSync(path.join(tmpdir(), "chatcore-e2e-redis-"));

  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    const log = logStream(`redis-${server.port}`);
    const child = spawn(
      process.env.REDIS_SERVER ?? "redis-server",
      ["--port", String(server.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", server.dir],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    server.child = child;
    await waitFor("redis-server", async () => canConnect(server.port), child);
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  async stop(): Promise<void> {
    if (this.child) await stopProcess(this.child, "SIGTERM");
    this.child = null;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function canConnect(port: number): Promise<boolean> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export interface ChatServerOptions {
  /** Use this Redis (the log survives a restart). */
  redisUrl?: string;
  /**
   * The embedded default, as a user starts it: no storage setting and no secret key, so
   * `chatcore serve` keeps everything (the SQLite file and the signing key it makes) in a data
   * directory of its own, here a fresh temporary one that a restart reuses. Without this or
   * `redisUrl`, everything is in memory (CHATCORE_STORAGE=memory) and lost with the process.
   */
  embedded?: boolean;
  port?: number;
  name?: string;
}

/** `chatcore serve`, restartable on the same port with the same settings. */
export class ChatServer {
  private child: ChildProcess | null = null;
  /** The embedded server's data directory (kept across restarts, removed by `stop`). */
  readonly dataDir: string | null;

  private constructor(
    readonly port: number,
    private readonly options: ChatServerOptions,
    private readonly secretKey: string,
  ) {
    this.dataDir = options.embedded ? mkdtempSync(path.join(tmpdir(), "chatcore-e2e-data-")) : null;
  }

  static async start(options: ChatServerOptions = {}): Promise<ChatServer> {
    const port = options.port ?? (await freePort());
    const key = `e2e-${Math.random().toString(36).slice(2)}-${"k".repeat(40)}`;
    const server = new ChatServer(port, options, key);
    await server.launch();
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private async launch(): Promise<void> {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHONPATH: ["src", "src/adapters", "apps/api"].map((p) => path.join(REPO_ROOT, p)).join(path.delimiter),
      CHATCORE_WEB_DIR: path.join(WEB_DIR, "out"),
      CHATCORE_LLM__MODEL: "demo",
      CHATCORE_LLM__DEMO_DELAY: DEMO_DELAY,
      CHATCORE_LOG_FORMAT: "text",
      // Every browser of the suite comes from 127.0.0.1, against one server: the limits per
      // client address would add up over the whole run.
      CHATCORE_IP_MESSAGES_PER_MINUTE: "100000",
      CHATCORE_IP_MESSAGES_BURST: "10000",
      CHATCORE_IP_TOKENS_PER_MINUTE: "0",
      CHATCORE_MAX_CONNECTIONS_PER_IP: "10000",
    };
    // Where the data goes is this server's choice alone, whatever the test run's environment says.
    for (const name of ["CHATCORE_STORAGE", "CHATCORE_DATA_DIR", "CHATCORE_REDIS_URL", "CHATCORE_SECRET_KEY"]) delete env[name];
    if (this.dataDir !== null) {
      env.CHATCORE_DATA_DIR = this.dataDir;
    } else {
      env.CHATCORE_SECRET_KEY = this.secretKey;
      if (!this.options.redisUrl) env.CHATCORE_STORAGE = "memory";
    }
    if (this.options.redisUrl) {
      env.CHATCORE_REDIS_URL = this.options.redisUrl;
      // A reply whose worker was killed is taken over soon by the restarted server. It must
      // stay above the worker's keepalive interval (5 s), or a worker steals its own reply.
      env.CHATCORE_REDIS__RECLAIM_AFTER = "10";
    }
    const log = logStream(`chatcore-${this.options.name ?? this.port}`);
    const storage = this.options.redisUrl ? "redis" : this.dataDir !== null ? `sqlite in ${this.dataDir}` : "memory";
    log.write(`\n--- start on port ${this.port} (${storage})\n`);
    const child = spawn(pythonExecutable(), ["-m", "chatcore_api", "serve", "--host", "127.0.0.1", "--port", String(this.port)], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    this.child = child;
    await waitFor(
      "chatcore serve",
      async () => {
        try {
          const response = await fetch(`${this.url}/healthz`);
          return response.ok;
        } catch {
          return false;
        }
      },
      child,
    );
  }

  /** Kill the process at once (a crash: replies in flight are cut off). */
  async kill(): Promise<void> {
    if (this.child) await stopProcess(this.child, "SIGKILL");
    this.child = null;
  }

  /** Start again on the same port, with the same secret key and storage. */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    if (this.child) await stopProcess(this.child, "SIGTERM");
    this.child = null;
    if (this.dataDir !== null) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

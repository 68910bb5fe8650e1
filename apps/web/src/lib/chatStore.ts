/**
 * The state container React reads through `useSyncExternalStore`.
 *
 * Server frames are not applied one by one: they are queued and folded in together once per
 * animation frame, so a reply streaming 100 tokens a second costs one store write (and one
 * render of the streaming row) per frame, not per token. User actions are applied at once,
 * after whatever frames are waiting, so the order of things never changes.
 */

import { reduce } from "./chatState";
import { initialState, type ChatAction, type ChatState } from "./chatTypes";
import type { ServerFrame } from "./protocol";

export type Scheduler = (flush: () => void) => () => void;

/** requestAnimationFrame, with a timer as a fallback: hidden tabs get no animation frames. */
export const animationFrameScheduler: Scheduler = (flush) => {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    if (raf !== null) cancelAnimationFrame(raf);
    clearTimeout(timer);
    flush();
  };
  const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : null;
  const timer = setTimeout(run, 100);
  return () => {
    done = true;
    if (raf !== null) cancelAnimationFrame(raf);
    clearTimeout(timer);
  };
};

/** Applies frames synchronously (unit tests that do not care about batching). */
export const immediateScheduler: Scheduler = (flush) => {
  flush();
  return () => {};
};

export class ChatStore {
  private state: ChatState;
  private readonly listeners = new Set<() => void>();
  private inbox: ServerFrame[] = [];
  private cancelScheduled: (() => void) | null = null;

  constructor(
    private readonly schedule: Scheduler = animationFrameScheduler,
    private readonly now: () => number = Date.now,
    initial: ChatState = initialState,
  ) {
    this.state = initial;
  }

  getState = (): ChatState => this.state;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** Apply a user action (after any frames still waiting). */
  dispatch(action: ChatAction): void {
    this.flush();
    this.commit(reduce(this.state, action));
  }

  /** Queue a server frame; it is applied at the next flush. */
  receive(frame: ServerFrame): void {
    this.inbox.push(frame);
    if (this.cancelScheduled !== null) return;
    let ran = false;
    const cancel = this.schedule(() => {
      ran = true;
      this.cancelScheduled = null;
      this.flush();
    });
    if (!ran) this.cancelScheduled = cancel;
  }

  /** Apply every waiting frame now, in one write. */
  flush(): void {
    if (this.cancelScheduled !== null) {
      const cancel = this.cancelScheduled;
      this.cancelScheduled = null;
      cancel();
    }
    if (this.inbox.length === 0) return;
    const frames = this.inbox;
    this.inbox = [];
    this.commit(reduce(this.state, { type: "frames", frames, now: this.now() }));
  }

  private commit(next: ChatState): void {
    if (next === this.state) return;
    this.state = next;
    for (const listener of [...this.listeners]) listener();
  }
}

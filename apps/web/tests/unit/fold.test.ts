import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { initialState, type ChatState } from "@/lib/chatTypes";
import { applyFrame } from "@/lib/frames";
import { parseServerFrame, type ChatEventType, type EventFrame, type SnapshotFrame } from "@/lib/protocol";

/**
 * The shared fold fixture (`tests/fixtures/folds.json`), written from the server's fold by
 * `python -m tests.support.fold_fixtures`: the client must fold the same event frames into the
 * same history. The frames go through the client's own parser and `applyFrame`, the path a
 * frame from the socket takes (`applyEvent` and the cursor rule). At each checkpoint the
 * fixture also holds the snapshot the server would send then: a client resuming from it must
 * get the same history.
 */

interface Checkpoint {
  after: number;
  history: ExpectedHistory;
  snapshot: unknown;
}

/** The fixture's history, as far as this test reads it. */
interface ExpectedHistory {
  conversations: Record<string, { pending: { reply: { models: string[] } | null; interrupted: boolean } | null }>;
}

interface FoldCase {
  name: string;
  frames: unknown[];
  checkpoints: Checkpoint[];
}

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "../fixtures/folds.json");
const fixture = JSON.parse(readFileSync(FIXTURE, "utf-8")) as { cases: FoldCase[] };

const NOW = Date.parse("2026-03-02T12:00:00Z");

/** Every event type of the protocol: the record's type makes this list complete. */
const EVERY_EVENT_TYPE: Record<ChatEventType, true> = {
  session_opened: true,
  session_restored: true,
  tokens_revoked: true,
  profile_updated: true,
  conversation_started: true,
  conversation_renamed: true,
  message_submitted: true,
  message_edited: true,
  reply_requested: true,
  branch_selected: true,
  conversation_deleted: true,
  session_deleted: true,
  reply_started: true,
  reply_delta: true,
  reply_model_switched: true,
  reply_completed: true,
  reply_failed: true,
  reply_cancel_requested: true,
  reply_cancelled: true,
  reply_abandoned: true,
};

/** What the fixture holds of the client's state: the cursor and the history. The client keeps
 * why an attempt was interrupted; the server's view only that it was. */
function history(state: ChatState): object {
  const conversations = Object.fromEntries(
    Object.entries(state.conversations).map(([id, conv]) => [
      id,
      { ...conv, pending: conv.pending && { ...conv.pending, interrupted: conv.pending.interrupted !== null } },
    ]),
  );
  return { cursor: state.cursor, profile: state.profile, order: state.order, conversations };
}

function parsed(frame: unknown): EventFrame {
  const result = parseServerFrame(JSON.stringify(frame));
  if (result === null || result.type !== "event") throw new Error(`the client refused ${JSON.stringify(frame)}`);
  return result;
}

function parsedSnapshot(frame: unknown): SnapshotFrame {
  const result = parseServerFrame(JSON.stringify(frame));
  if (result === null || result.type !== "snapshot") throw new Error(`the client refused ${JSON.stringify(frame)}`);
  return result;
}

/** The history as a snapshot describes it: a reply in progress names only its current model,
 * and a turn does not say whether an earlier attempt was cut off. */
function asSnapshotTellsIt(expected: ExpectedHistory): ExpectedHistory {
  const copy = structuredClone(expected);
  for (const conv of Object.values(copy.conversations)) {
    if (conv.pending === null) continue;
    conv.pending.interrupted = false;
    if (conv.pending.reply) conv.pending.reply.models = conv.pending.reply.models.slice(-1);
  }
  return copy;
}

describe("the client's fold agrees with the server's (shared fixture)", () => {
  it("has cases, each ending on a checkpoint after its last frame", () => {
    expect(fixture.cases.length).toBeGreaterThan(0);
    for (const c of fixture.cases) expect(c.checkpoints.at(-1)?.after).toBe(c.frames.length);
  });

  it("covers every event type of the protocol", () => {
    const seen = new Set(fixture.cases.flatMap((c) => c.frames.map((f) => parsed(f).event.type)));
    expect([...seen].sort()).toEqual(Object.keys(EVERY_EVENT_TYPE).sort());
  });

  for (const c of fixture.cases) {
    it(`events: ${c.name}`, () => {
      let state = initialState;
      let applied = 0;
      for (const checkpoint of c.checkpoints) {
        for (; applied < checkpoint.after; applied++) state = applyFrame(state, parsed(c.frames[applied]), NOW);
        expect(history(state), `after ${applied} frames`).toStrictEqual(checkpoint.history);
      }
    });
  }
});

describe("a snapshot of the server's view gives the client the history its events give", () => {
  for (const c of fixture.cases) {
    it(`snapshots: ${c.name}`, () => {
      for (const checkpoint of c.checkpoints) {
        const state = applyFrame(initialState, parsedSnapshot(checkpoint.snapshot), NOW);
        expect(history(state), `at ${checkpoint.after} frames`).toStrictEqual(asSnapshotTellsIt(checkpoint.history));
      }
    });
  }
});

/** What a snapshot cannot tell (the earlier models of a reply in progress, an interrupted
 * attempt) changes what follows it: such checkpoints are left out of "snapshot + rest". */
function snapshotLosesSomething(expected: ExpectedHistory): boolean {
  return Object.values(expected.conversations).some(
    (conv) => conv.pending !== null && (conv.pending.interrupted || (conv.pending.reply?.models.length ?? 0) > 1),
  );
}

describe("a snapshot at any checkpoint plus the frames after it gives the history of all the frames", () => {
  for (const c of fixture.cases) {
    it(`snapshot + rest: ${c.name}`, () => {
      const final = c.checkpoints.at(-1)!;
      const resumable = c.checkpoints.filter((ck) => !snapshotLosesSomething(ck.history));
      expect(resumable.length).toBeGreaterThan(0);
      for (const checkpoint of resumable) {
        let state = applyFrame(initialState, parsedSnapshot(checkpoint.snapshot), NOW);
        for (const frame of c.frames.slice(checkpoint.after)) state = applyFrame(state, parsed(frame), NOW);
        expect(history(state), `snapshot at ${checkpoint.after} frames, then the rest`).toStrictEqual(final.history);
      }
    });
  }
});

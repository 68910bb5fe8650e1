import { describe, expect, it } from "vitest";
import { backoffCeiling, backoffDelay } from "@/lib/backoff";

const policy = { baseMs: 1000, maxMs: 30_000, minMs: 250 };

describe("reconnect backoff", () => {
  it("doubles the ceiling on each attempt up to the cap", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffCeiling(n, policy))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
  });

  it("spreads delays uniformly between the floor and the ceiling (full jitter)", () => {
    expect(backoffDelay(3, () => 0, policy)).toBe(250);
    expect(backoffDelay(3, () => 0.5, policy)).toBe(Math.round(250 + 0.5 * (8000 - 250)));
    expect(backoffDelay(3, () => 0.999999, policy)).toBeLessThanOrEqual(8000);
  });

  it("never waits longer than the cap, however many attempts failed", () => {
    for (let attempt = 0; attempt < 100; attempt++) {
      expect(backoffDelay(attempt, () => 0.9999, policy)).toBeLessThanOrEqual(30_000);
    }
  });
});

import { describe, expect, it } from "vitest";
import { compareCursors, isAfter, isCursor, maxCursor } from "@/lib/cursor";

describe("cursors", () => {
  it("compares the millisecond part numerically, not as text", () => {
    expect(compareCursors("10-0", "9-5")).toBeGreaterThan(0);
    expect(compareCursors("9-5", "10-0")).toBeLessThan(0);
  });

  it("compares the sequence numerically when the milliseconds are equal", () => {
    expect(compareCursors("5-10", "5-9")).toBeGreaterThan(0);
    expect(compareCursors("5-9", "5-9")).toBe(0);
  });

  it("handles numbers beyond 2^53 exactly", () => {
    expect(compareCursors("18446744073709551615-0", "18446744073709551614-0")).toBeGreaterThan(0);
    expect(compareCursors("1-9007199254740993", "1-9007199254740992")).toBeGreaterThan(0);
  });

  it("puts null (no cursor) before every cursor", () => {
    expect(compareCursors(null, "0-0")).toBeLessThan(0);
    expect(compareCursors(null, null)).toBe(0);
    expect(isAfter("0-0", null)).toBe(true);
    expect(maxCursor(null, "3-1")).toBe("3-1");
    expect(maxCursor("12-0", "3-1")).toBe("12-0");
  });

  it("rejects malformed cursors", () => {
    expect(isCursor("1-2")).toBe(true);
    expect(isCursor("01-2")).toBe(false);
    expect(isCursor("1")).toBe(false);
    expect(() => compareCursors("abc", "1-0")).toThrow(/malformed/);
  });
});

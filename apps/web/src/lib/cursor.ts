/**
 * Cursors are positions in the session's log, Redis-stream-like: "<ms>-<seq>", both parts
 * unsigned decimal integers that may exceed 2^53. They are compared as (ms, seq) pairs of
 * numbers, never as strings ("10-0" comes after "9-5").
 */

const CURSOR = /^(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})$/;

export function isCursor(value: unknown): value is string {
  return typeof value === "string" && CURSOR.test(value);
}

/** Compare two canonical decimal strings (no leading zeros) as numbers. */
function compareDecimal(a: string, b: string): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Negative when `a` comes before `b`, 0 when equal, positive after. `null` (no cursor: the
 * start of the log) comes before every cursor. Throws on a malformed cursor.
 */
export function compareCursors(a: string | null, b: string | null): number {
  if (a === null || b === null) {
    if (a === b) return 0;
    return a === null ? -1 : 1;
  }
  const ma = CURSOR.exec(a);
  const mb = CURSOR.exec(b);
  if (!ma || !mb) throw new Error(`malformed cursor: ${!ma ? a : b}`);
  return compareDecimal(ma[1]!, mb[1]!) || compareDecimal(ma[2]!, mb[2]!);
}

/** True when `cursor` comes strictly after `last` (anything comes after `null`). */
export function isAfter(cursor: string, last: string | null): boolean {
  return compareCursors(cursor, last) > 0;
}

/** The later of two cursors. */
export function maxCursor(a: string | null, b: string | null): string | null {
  return compareCursors(a, b) >= 0 ? a : b;
}

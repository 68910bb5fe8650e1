/**
 * Reconnect delays: exponential growth with "full jitter" (a uniformly random delay between
 * a small floor and the current ceiling), so that many clients cut off together do not come
 * back together. `random` is injectable so tests can pin it.
 */

export interface BackoffPolicy {
  /** Ceiling of the first retry, in ms. */
  baseMs: number;
  /** The ceiling never grows past this, in ms. */
  maxMs: number;
  /** No retry is sooner than this, in ms. */
  minMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, maxMs: 30_000, minMs: 250 };

/** The ceiling of the delay before retry number `attempt` (0-based). */
export function backoffCeiling(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  const exp = Math.min(attempt, 30);
  return Math.min(policy.maxMs, policy.baseMs * 2 ** exp);
}

/** The delay before retry number `attempt` (0-based), given a random number in [0, 1). */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const ceiling = Math.max(policy.minMs, backoffCeiling(attempt, policy));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(policy.minMs + r * (ceiling - policy.minMs));
}

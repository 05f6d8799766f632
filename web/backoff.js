// Reconnect and retry delays: exponential with jitter, so a restarted server
// is not hit by every client at the same instant.

/** Delay before try `attempt` (1-based): `first` doubling up to `max`, times 0.5..1 (`rand` in [0, 1)). */
export function backoffDelay(attempt, { first = 250, max = 10000, rand = Math.random } = {}) {
  const base = Math.min(max, first * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.5 + rand() / 2));
}

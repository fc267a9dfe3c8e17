/** The retry policy: which answers to retry, and how long to wait before the next attempt. */
/**
 * Statuses worth retrying with the same `event_id`: 408 (the body arrived too slowly), 429 (rate
 * limited) and every 5xx (503 overloaded/busy/unavailable, and the 502/504 of a proxy in between).
 */
export function isRetryableStatus(status) {
    return status === 408 || status === 429 || status >= 500;
}
/**
 * `Retry-After` in milliseconds: either delay-seconds (`"1"`) or an HTTP date
 * (`"Wed, 21 Oct 2026 07:28:00 GMT"`). `undefined` when absent or unreadable; never negative.
 */
export function parseRetryAfter(value, now = Date.now()) {
    if (value == null)
        return undefined;
    const text = value.trim();
    if (text === '')
        return undefined;
    if (/^\d+$/.test(text))
        return Number(text) * 1000;
    // An HTTP date names its day and month; "-1" or "1.5" are not dates (whatever Date.parse says).
    if (!/[a-z]/i.test(text))
        return undefined;
    const date = Date.parse(text);
    if (Number.isNaN(date))
        return undefined;
    return Math.max(0, date - now);
}
/**
 * Exponential backoff with full jitter: a uniform wait in [0, min(maxDelayMs, baseDelayMs * 2^attempt)),
 * `attempt` counting from 0 for the first retry.
 */
export function backoffDelay(attempt, policy, random = Math.random) {
    const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt, 30));
    return Math.floor(random() * ceiling);
}
/**
 * The wait before retry number `attempt` (from 0). With a `Retry-After`, at least that long (plus
 * up to `baseDelayMs` of jitter, so that clients told the same time do not come back together);
 * otherwise the backoff.
 */
export function retryDelay(attempt, retryAfterMs, policy, random = Math.random) {
    if (retryAfterMs !== undefined)
        return retryAfterMs + Math.floor(random() * policy.baseDelayMs);
    return backoffDelay(attempt, policy, random);
}
export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

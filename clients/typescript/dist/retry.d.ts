/** The retry policy: which answers to retry, and how long to wait before the next attempt. */
export interface RetryPolicy {
    /** Retries after the first attempt. */
    maxRetries: number;
    /** The first backoff step. */
    baseDelayMs: number;
    /** The cap of the exponential backoff (not of `Retry-After`, which is honoured as given). */
    maxDelayMs: number;
}
/**
 * Statuses worth retrying with the same `event_id`: 408 (the body arrived too slowly), 429 (rate
 * limited) and every 5xx (503 overloaded/busy/unavailable, and the 502/504 of a proxy in between).
 */
export declare function isRetryableStatus(status: number): boolean;
/**
 * `Retry-After` in milliseconds: either delay-seconds (`"1"`) or an HTTP date
 * (`"Wed, 21 Oct 2026 07:28:00 GMT"`). `undefined` when absent or unreadable; never negative.
 */
export declare function parseRetryAfter(value: string | null | undefined, now?: number): number | undefined;
/**
 * Exponential backoff with full jitter: a uniform wait in [0, min(maxDelayMs, baseDelayMs * 2^attempt)),
 * `attempt` counting from 0 for the first retry.
 */
export declare function backoffDelay(attempt: number, policy: RetryPolicy, random?: () => number): number;
/**
 * The wait before retry number `attempt` (from 0). With a `Retry-After`, at least that long (plus
 * up to `baseDelayMs` of jitter, so that clients told the same time do not come back together);
 * otherwise the backoff.
 */
export declare function retryDelay(attempt: number, retryAfterMs: number | undefined, policy: RetryPolicy, random?: () => number): number;
export declare function sleep(ms: number): Promise<void>;

/** Flushing while the page goes away: page lifecycle events and `navigator.sendBeacon`. */
import type { QueuedEvent } from './types.js';
/**
 * The bytes of one beacon or keepalive request. Browsers allow 64 KiB in flight for all of a page's
 * beacons and keepalive fetches together; a request beyond what is left is refused.
 */
export declare const BEACON_MAX_BYTES = 60000;
/**
 * `navigator.sendBeacon` posting `{"events": [...], "sent_at": ...}` as a `text/plain` Blob, which
 * needs no CORS preflight (the service accepts `text/plain`); `sent_at` is read from `now` as the
 * beacon leaves. `undefined` where there is no sendBeacon.
 */
export declare function beaconSender(url: string, now: () => number): ((events: QueuedEvent[]) => boolean) | undefined;
/** Milliseconds since the epoch as RFC 3339 in UTC, as `timestamp` and `sent_at` carry them. */
export declare function isoTime(ms: number): string;
/**
 * Calls `onHide` when the page is hidden (`visibilitychange` to `hidden`, the last moment a page is
 * sure to see on mobile) or unloaded (`pagehide`), where `document` and `window` exist. Returns the
 * function that removes the listeners.
 */
export declare function watchPageHide(onHide: () => void): () => void;

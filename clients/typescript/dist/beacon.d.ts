/** Flushing while the page goes away: page lifecycle events and `navigator.sendBeacon`. */
import type { QueuedEvent } from './types.js';
/**
 * The bytes of one beacon or keepalive request. Browsers allow 64 KiB in flight for all of a page's
 * beacons and keepalive fetches together; a request beyond what is left is refused.
 */
export declare const BEACON_MAX_BYTES = 60000;
/**
 * `navigator.sendBeacon` posting `{"events": [...]}` as a `text/plain` Blob, which needs no CORS
 * preflight (the service accepts `text/plain`). `undefined` where there is no sendBeacon.
 */
export declare function beaconSender(url: string): ((events: QueuedEvent[]) => boolean) | undefined;
/**
 * Calls `onHide` when the page is hidden (`visibilitychange` to `hidden`, the last moment a page is
 * sure to see on mobile) or unloaded (`pagehide`), where `document` and `window` exist. Returns the
 * function that removes the listeners.
 */
export declare function watchPageHide(onHide: () => void): () => void;

/** Flushing while the page goes away: page lifecycle events and `navigator.sendBeacon`. */
import type { QueuedEvent } from './types.js';

/**
 * The bytes of one beacon or keepalive request. Browsers allow 64 KiB in flight for all of a page's
 * beacons and keepalive fetches together; a request beyond what is left is refused.
 */
export const BEACON_MAX_BYTES = 60_000;

/**
 * `navigator.sendBeacon` posting `{"events": [...], "sent_at": ...}` as a `text/plain` Blob, which
 * needs no CORS preflight (the service accepts `text/plain`); `sent_at` is read from `now` as the
 * beacon leaves. `undefined` where there is no sendBeacon.
 */
export function beaconSender(url: string, now: () => number): ((events: QueuedEvent[]) => boolean) | undefined {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav === undefined || typeof nav.sendBeacon !== 'function') return undefined;
  return (events) => {
    const body = JSON.stringify({ events, sent_at: isoTime(now()) });
    return nav.sendBeacon(url, new Blob([body], { type: 'text/plain' }));
  };
}

/** Milliseconds since the epoch as RFC 3339 in UTC, as `timestamp` and `sent_at` carry them. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Calls `onHide` when the page is hidden (`visibilitychange` to `hidden`, the last moment a page is
 * sure to see on mobile) or unloaded (`pagehide`), where `document` and `window` exist. Returns the
 * function that removes the listeners.
 */
export function watchPageHide(onHide: () => void): () => void {
  const doc = (globalThis as { document?: Document }).document;
  const win = (globalThis as { window?: Window }).window;
  const onVisibility = (): void => {
    if (doc?.visibilityState === 'hidden') onHide();
  };
  const onPageHide = (): void => onHide();
  if (typeof doc?.addEventListener === 'function') doc.addEventListener('visibilitychange', onVisibility);
  if (typeof win?.addEventListener === 'function') win.addEventListener('pagehide', onPageHide);
  return () => {
    if (typeof doc?.removeEventListener === 'function') doc.removeEventListener('visibilitychange', onVisibility);
    if (typeof win?.removeEventListener === 'function') win.removeEventListener('pagehide', onPageHide);
  };
}

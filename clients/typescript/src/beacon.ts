/** Flushing while the page goes away: page lifecycle events and `navigator.sendBeacon`. */
import type { QueuedEvent } from './types.js';

/**
 * The bytes of one beacon or keepalive request. Browsers allow 64 KiB in flight for all of a page's
 * beacons and keepalive fetches together; a request beyond what is left is refused.
 */
export const BEACON_MAX_BYTES = 60_000;

/**
 * `navigator.sendBeacon` posting `{"events": [...]}` as a `text/plain` Blob, which needs no CORS
 * preflight (the service accepts `text/plain`). `undefined` where there is no sendBeacon.
 */
export function beaconSender(url: string): ((events: QueuedEvent[]) => boolean) | undefined {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav === undefined || typeof nav.sendBeacon !== 'function') return undefined;
  return (events) => nav.sendBeacon(url, new Blob([JSON.stringify({ events })], { type: 'text/plain' }));
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

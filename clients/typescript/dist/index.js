/**
 * Client of the event-ingest service.
 *
 *   import { logEvent } from '@event-ingest/client';
 *   await logEvent(1, 'B08XXXX', 'view', { page: 'product_detail' });
 */
import { EventClient } from './client.js';
export { EventClient } from './client.js';
export { EventDeliveryError, EventRejectedError } from './errors.js';
export { BEACON_MAX_BYTES } from './beacon.js';
export { MAX_BATCH_EVENTS } from './queue.js';
export { backoffDelay, isRetryableStatus, parseRetryAfter, retryDelay } from './retry.js';
export { newEventId } from './uuid.js';
export { EVENT_TYPES, } from './types.js';
let defaultClient;
/**
 * Sets the options of the default client behind the module-level `logEvent`, `track` and
 * `flush`, and returns it. A previous default client is closed (its queue sent).
 */
export function configure(options) {
    const previous = defaultClient;
    defaultClient = new EventClient(options);
    if (previous !== undefined)
        void previous.close();
    return defaultClient;
}
/** The default client, made with the default options on first use unless `configure` came first. */
export function getClient() {
    defaultClient ??= new EventClient();
    return defaultClient;
}
/**
 * The seed's function, same signature and answer: posts one event to `/api/event` and resolves to
 * the parsed JSON, `{"success": true, "message": "Event logged: view"}`. Unlike the seed it retries
 * network errors, 408, 429 and 5xx with the same `event_id`, and it throws `EventRejectedError`
 * on any other 4xx instead of resolving to the error body. Without a `userId` (a visitor who has not
 * logged in) the event carries the client's anonymous id, or the user `identify` named.
 */
export function logEvent(userId, asin, eventType, metadata) {
    return getClient().logEvent(userId, asin, eventType, metadata);
}
/** Queues an event on the default client; returns its `event_id`. */
export function track(userId, asin, eventType, metadata) {
    return getClient().track(userId, asin, eventType, metadata);
}
/** The visitor logged in: see `EventClient.identify`. */
export function identify(userId) {
    return getClient().identify(userId);
}
/** The user logged out: see `EventClient.reset`. */
export function reset() {
    getClient().reset();
}
/** Sends the default client's queue now. */
export function flush() {
    return getClient().flush();
}

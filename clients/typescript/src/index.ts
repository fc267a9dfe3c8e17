/**
 * Client of the event-ingest service.
 *
 *   import { logEvent } from '@event-ingest/client';
 *   await logEvent(1, 'B08XXXX', 'view', { page: 'product_detail' });
 */
import { EventClient, type EventClientOptions } from './client.js';
import type { EventType, FlushResult, IdentifyResponse, LogEventResponse, Metadata } from './types.js';

export { EventClient, type EventClientOptions } from './client.js';
export { EventDeliveryError, EventRejectedError } from './errors.js';
export { BEACON_MAX_BYTES } from './beacon.js';
export { MAX_BATCH_EVENTS } from './queue.js';
export { backoffDelay, isRetryableStatus, parseRetryAfter, retryDelay, type RetryPolicy } from './retry.js';
export { newEventId } from './uuid.js';
export {
  EVENT_TYPES,
  type ApiErrorBody,
  type ApiErrorDetail,
  type BatchResponse,
  type BatchResult,
  type EventPayload,
  type EventType,
  type FlushResult,
  type IdentifyResponse,
  type IdStorage,
  type LogEventResponse,
  type Metadata,
  type QueuedEvent,
  type RejectedEvent,
  type UserContext,
} from './types.js';

let defaultClient: EventClient | undefined;

/**
 * Sets the options of the default client behind the module-level `logEvent`, `track` and
 * `flush`, and returns it. A previous default client is closed (its queue sent).
 */
export function configure(options: EventClientOptions): EventClient {
  const previous = defaultClient;
  defaultClient = new EventClient(options);
  if (previous !== undefined) void previous.close();
  return defaultClient;
}

/** The default client, made with the default options on first use unless `configure` came first. */
export function getClient(): EventClient {
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
export function logEvent(
  userId: number | null | undefined,
  asin: string,
  eventType: 'view' | 'click' | 'add_to_cart' | 'purchase' | 'rate',
  metadata?: Record<string, any>,
): Promise<LogEventResponse> {
  return getClient().logEvent(userId, asin, eventType, metadata);
}

/** Queues an event on the default client; returns its `event_id`. */
export function track(userId: number | null | undefined, asin: string, eventType: EventType, metadata?: Metadata): string {
  return getClient().track(userId, asin, eventType, metadata);
}

/** The visitor logged in: see `EventClient.identify`. */
export function identify(userId: number): Promise<IdentifyResponse> {
  return getClient().identify(userId);
}

/** The user logged out: see `EventClient.reset`. */
export function reset(): void {
  getClient().reset();
}

/** Sends the default client's queue now. */
export function flush(): Promise<FlushResult> {
  return getClient().flush();
}

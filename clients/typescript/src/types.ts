/** The five interactions the service records. */
export type EventType = 'view' | 'click' | 'add_to_cart' | 'purchase' | 'rate';

export const EVENT_TYPES: readonly EventType[] = ['view', 'click', 'add_to_cart', 'purchase', 'rate'];

/** Free-form event details: a JSON object of at most 8 KiB, 8 levels deep, 128 keys. */
export type Metadata = Record<string, any>;

/**
 * One event as the service takes it (`POST /api/event`, or one element of `POST /api/events`).
 * Exactly one of `user_id` (a logged-in user) and `anonymous_id` (a visitor) names who did it.
 */
export interface EventPayload {
  user_id?: number;
  /** A visitor's id before they log in: 1 to 64 letters, digits, `-`, `_` or `.`. */
  anonymous_id?: string;
  asin: string;
  event_type: EventType;
  metadata?: Metadata;
  /** The idempotency key: a retry with the same id is stored and counted once. */
  event_id?: string;
  /**
   * When the event happened (RFC 3339), by this device's clock. The client sets it when the event
   * is logged or tracked; the service removes the clock's error using `sent_at`.
   */
  timestamp?: string;
  /** When the event was sent, by the same clock. The client sets it on every attempt. */
  sent_at?: string;
}

/** An event with its client-generated id and time, as held in the queue. */
export interface QueuedEvent extends EventPayload {
  event_id: string;
  timestamp: string;
}

/** A user's realtime context, as `POST /api/identify` answers it after the merge. */
export interface UserContext {
  recent_items: string[];
  recent_categories: Record<string, number>;
  last_active: string | null;
  purchased: string[];
}

/** The answer to `POST /api/identify`. */
export interface IdentifyResponse {
  user_id: number;
  anonymous_id: string;
  /**
   * The user's context after the merge: only when the client's key is a server key (or the
   * service has no keys). A write key, the kind a page carries, gets none.
   */
  context?: UserContext;
}

/** Where the client keeps the visitor's anonymous id and the identified user: `localStorage`'s shape. */
export interface IdStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The answer to `POST /api/event`: exactly `{"success": true, "message": "Event logged: view"}`. */
export interface LogEventResponse {
  success: true;
  message: string;
}

/** What is wrong, in every error answer and in every rejected result of a batch. */
export interface ApiErrorDetail {
  code: string;
  message: string;
  /** The offending field, when one is to blame. */
  field?: string;
}

/** Every error answer: `{"success": false, "error": {"code", "message", "field"?}}`. */
export interface ApiErrorBody {
  success: false;
  error: ApiErrorDetail;
}

export type BatchResult =
  | { index: number; status: 'accepted'; event_id: string }
  | { index: number; status: 'rejected'; error: ApiErrorDetail };

/** The answer to `POST /api/events`: each event accepted or rejected on its own. */
export interface BatchResponse {
  success: true;
  accepted: number;
  rejected: number;
  results: BatchResult[];
}

/** An event of the queue that the service refused, and why. */
export interface RejectedEvent {
  event: QueuedEvent;
  error: ApiErrorDetail;
}

/** What one `flush()` did. */
export interface FlushResult {
  /** Events the service accepted (stored once each, whatever the retries). */
  accepted: number;
  /** Events the service refused; also reported one by one to `onRejected`. */
  rejected: RejectedEvent[];
  /** Events still queued when the flush ended (tracked meanwhile, or kept after a failed delivery). */
  pending: number;
  /** Set when a batch could not be delivered after all retries; its events are kept in the queue. */
  error?: unknown;
}

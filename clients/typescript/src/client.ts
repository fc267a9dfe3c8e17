import { BEACON_MAX_BYTES, beaconSender, isoTime, watchPageHide } from './beacon.js';
import { EventDeliveryError, EventRejectedError } from './errors.js';
import { EventQueue, MAX_BATCH_EVENTS, type UnloadSender } from './queue.js';
import { isRetryableStatus, parseRetryAfter, retryDelay, sleep, type RetryPolicy } from './retry.js';
import type {
  ApiErrorBody,
  ApiErrorDetail,
  BatchResponse,
  EventPayload,
  EventType,
  FlushResult,
  IdentifyResponse,
  IdStorage,
  LogEventResponse,
  Metadata,
  QueuedEvent,
} from './types.js';
import { newEventId } from './uuid.js';

export interface EventClientOptions {
  /** Where the service is. Default `http://localhost:8000`. */
  baseUrl?: string;
  /** Sent as `X-API-Key` when the service has `API_KEYS` set. */
  apiKey?: string;
  /** The `fetch` to use. Default the global one. */
  fetch?: typeof fetch;
  /** Retries after the first attempt, on network errors, timeouts, 408, 429 and 5xx. Default 5. */
  maxRetries?: number;
  /** The first backoff step. Default 200 ms. */
  baseDelayMs?: number;
  /** The cap of the backoff (a `Retry-After` is honoured even when longer). Default 10,000 ms. */
  maxDelayMs?: number;
  /** The limit of one attempt, answer body included; 0 for none. Default 10,000 ms. */
  timeoutMs?: number;
  /** Queue: events per `POST /api/events`, 1 to 500; a full batch is sent at once. Default 100. */
  maxBatch?: number;
  /** Queue: how long a tracked event waits at most before it is sent. Default 1,000 ms. */
  flushIntervalMs?: number;
  /** Queue: events held at most; beyond it the oldest waiting ones are dropped. Default 10,000. */
  maxQueue?: number;
  /**
   * Batches whose JSON is at least this many bytes are sent gzip-compressed
   * (`Content-Encoding: gzip`) where the runtime has `CompressionStream`; single events, beacons
   * and keepalive requests never are. Default 2,048; `Infinity` turns compression off.
   */
  compressAboveBytes?: number;
  /**
   * The clock that stamps each event's `timestamp` (when it is logged or tracked) and each
   * request's `sent_at`, in milliseconds since the epoch. Default `Date.now`. It need not be
   * right: the service removes its error, measured between `sent_at` and its own clock.
   */
  now?: () => number;
  /**
   * Where the visitor's anonymous id and the identified user id are kept between page loads.
   * Default `localStorage` where the runtime has it, else memory (a new visitor per process).
   */
  storage?: IdStorage;
  /** Queue: flush with sendBeacon (or a keepalive fetch) when the page is hidden. Default true. */
  flushOnPageHide?: boolean;
  /** Queue: an event the service refused (invalid field, ...). It is not sent again. */
  onRejected?: (event: QueuedEvent, error: ApiErrorDetail) => void;
  /** Queue: events dropped because more than `maxQueue` were held. */
  onDropped?: (events: QueuedEvent[]) => void;
  /** Queue: a batch not delivered after all retries; its events stay queued for a later flush. */
  onError?: (error: unknown, events: QueuedEvent[]) => void;
}

const DEFAULTS = {
  baseUrl: 'http://localhost:8000',
  maxRetries: 5,
  baseDelayMs: 200,
  maxDelayMs: 10_000,
  timeoutMs: 10_000,
  maxBatch: 100,
  flushIntervalMs: 1_000,
  maxQueue: 10_000,
  compressAboveBytes: 2_048,
};

/** A client of the event-ingest service: single events, batches, and a batching queue. */
export class EventClient {
  readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly policy: RetryPolicy;
  private readonly timeoutMs: number;
  private readonly compressAboveBytes: number;
  private readonly now: () => number;
  private readonly queue: EventQueue;
  private readonly unwatch: () => void;
  private readonly storage: IdStorage;

  constructor(options: EventClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? DEFAULTS.baseUrl).replace(/\/+$/, '');
    this.apiKey = options.apiKey || undefined;
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.policy = {
      maxRetries: Math.max(0, options.maxRetries ?? DEFAULTS.maxRetries),
      baseDelayMs: Math.max(0, options.baseDelayMs ?? DEFAULTS.baseDelayMs),
      maxDelayMs: Math.max(0, options.maxDelayMs ?? DEFAULTS.maxDelayMs),
    };
    this.timeoutMs = Math.max(0, options.timeoutMs ?? DEFAULTS.timeoutMs);
    this.compressAboveBytes = Math.max(0, options.compressAboveBytes ?? DEFAULTS.compressAboveBytes);
    this.now = options.now ?? Date.now;
    this.storage = mirrored(options.storage ?? defaultStorage());
    const maxBatch = Math.min(MAX_BATCH_EVENTS, Math.max(1, Math.floor(options.maxBatch ?? DEFAULTS.maxBatch)));
    this.queue = new EventQueue((events) => this.sendBatch(events), {
      maxBatch,
      flushIntervalMs: Math.max(0, options.flushIntervalMs ?? DEFAULTS.flushIntervalMs),
      maxQueue: Math.max(maxBatch, Math.floor(options.maxQueue ?? DEFAULTS.maxQueue)),
      retryLaterMs: this.policy.maxDelayMs,
      onRejected: options.onRejected,
      onDropped: options.onDropped,
      onError: options.onError,
    });
    this.unwatch = options.flushOnPageHide === false ? () => undefined : watchPageHide(() => this.flushOnHide());
  }

  /**
   * Sends one event now, as the seed's `logEvent` did, and resolves to the service's answer,
   * `{"success": true, "message": "Event logged: view"}`. The event gets an `event_id`, so the
   * retries (network errors, timeouts, 408, 429, 5xx; `Retry-After` honoured) store it once, and
   * a `timestamp`, so that it is stored at the time of the call whenever an attempt lands.
   * Throws `EventRejectedError` on any other 4xx, `EventDeliveryError` when the retries run out.
   */
  logEvent(userId: number | null | undefined, asin: string, eventType: EventType, metadata?: Metadata): Promise<LogEventResponse> {
    return this.send({ ...this.actor(userId), asin, event_type: eventType, metadata });
  }

  /** `logEvent` for a whole event; an `event_id` and a `timestamp` are added when it has none. */
  send(event: EventPayload): Promise<LogEventResponse> {
    return this.post<LogEventResponse>('/api/event', this.stamped(event), this.policy.maxRetries);
  }

  /**
   * Sends up to 500 events in one `POST /api/events`, with the same retries as `logEvent`, and
   * resolves to the per-event results. Events without an `event_id` or a `timestamp` get one.
   */
  sendBatch(events: EventPayload[]): Promise<BatchResponse> {
    const stamped = events.map((event) => this.stamped(event));
    return this.post<BatchResponse>('/api/events', { events: stamped }, this.policy.maxRetries);
  }

  /**
   * Queues an event for the next batch and returns its `event_id`. The queue is sent when
   * `maxBatch` events wait, after `flushIntervalMs`, on `flush()`, and when the page is hidden.
   */
  track(userId: number | null | undefined, asin: string, eventType: EventType, metadata?: Metadata): string {
    const event: QueuedEvent = {
      ...this.actor(userId),
      asin,
      event_type: eventType,
      event_id: newEventId(),
      timestamp: isoTime(this.now()),
    };
    if (metadata !== undefined) event.metadata = metadata;
    this.queue.push(event);
    return event.event_id;
  }

  /**
   * The visitor's anonymous id: the one kept in `storage`, or a new one (a UUIDv7), kept there.
   * Events logged without a user id carry it until `identify` is called.
   */
  get anonymousId(): string {
    let id = this.storage.getItem(ANONYMOUS_ID_KEY);
    if (id === null || !/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
      id = newEventId(this.now());
      this.storage.setItem(ANONYMOUS_ID_KEY, id);
    }
    return id;
  }

  /** The user `identify` named, until `reset`; events logged without a user id carry it. */
  get userId(): number | undefined {
    const stored = Number(this.storage.getItem(USER_ID_KEY) ?? NaN);
    return Number.isSafeInteger(stored) && stored > 0 ? stored : undefined;
  }

  /**
   * The visitor logged in as `userId`: the service merges the visitor's context into the user's
   * and attributes the visitor's stored events to the user. Events already queued are sent first
   * (if they cannot be, it throws their delivery error and identifies nobody); from now on, events
   * logged without a user id carry `userId`. Retried like `logEvent`; calling it again is
   * harmless. Identifying another user without `reset()` between starts a new visitor first.
   */
  async identify(userId: number): Promise<IdentifyResponse> {
    // Another user on this visitor (no logout between): a new visitor, so that the first user's
    // context is not merged into the second's.
    const current = this.userId;
    if (current !== undefined && current !== userId) this.reset();
    if (this.queue.size > 0) {
      // The visitor's queued events go first, so that their context is there to merge.
      const flushed = await this.queue.flush();
      if (flushed.error !== undefined) throw flushed.error;
    }
    const anonymousId = this.anonymousId;
    const answer = await this.post<IdentifyResponse>('/api/identify', { anonymous_id: anonymousId, user_id: userId }, this.policy.maxRetries);
    this.storage.setItem(USER_ID_KEY, String(userId));
    return answer;
  }

  /** The user logged out: forget them, and start a new visitor (a new anonymous id). */
  reset(): void {
    this.storage.removeItem(USER_ID_KEY);
    this.storage.setItem(ANONYMOUS_ID_KEY, newEventId(this.now()));
  }

  /** Who an event is by: the user given, else the identified user, else the visitor. */
  private actor(userId: number | null | undefined): { user_id: number } | { anonymous_id: string } {
    const user = userId ?? this.userId;
    return user !== undefined ? { user_id: user } : { anonymous_id: this.anonymousId };
  }

  /** Sends every queued event now; resolves when the service has answered for them (or gave up). */
  flush(): Promise<FlushResult> {
    return this.queue.flush();
  }

  /**
   * Hands the queue over to `navigator.sendBeacon` (or, with an API key, which a beacon cannot
   * carry, to `fetch` with `keepalive`), as the page-hide listener does. Returns the number of
   * events handed over; the rest (a beacon refused) stay queued for the next flush.
   */
  flushOnHide(): number {
    return this.queue.flushOnUnload(this.unloadSender(), BEACON_MAX_BYTES);
  }

  /** Events queued and not yet answered for. */
  get queueSize(): number {
    return this.queue.size;
  }

  /** Stops the timers and page listeners and sends what is queued. */
  close(): Promise<FlushResult> {
    this.unwatch();
    this.queue.stop();
    return this.queue.flush();
  }

  private unloadSender(): UnloadSender {
    const beacon = this.apiKey === undefined ? beaconSender(`${this.baseUrl}/api/events`, this.now) : undefined;
    return beacon ?? ((events) => this.post<BatchResponse>('/api/events', { events }, 0, true));
  }

  /** The event with an `event_id` and a `timestamp`, added where it has none. */
  private stamped<E extends EventPayload>(event: E): E & { event_id: string; timestamp: string } {
    if (event.event_id && event.timestamp) return event as E & { event_id: string; timestamp: string };
    return { ...event, event_id: event.event_id || newEventId(), timestamp: event.timestamp || isoTime(this.now()) };
  }

  /**
   * One POST with its retries; resolves to the parsed answer of a 2xx. `body` (an event, or a
   * batch's envelope) gets the `sent_at` of each attempt.
   */
  private async post<T>(path: string, body: object, maxRetries: number, keepalive = false): Promise<T> {
    const url = `${this.baseUrl}${path}`;
    for (let attempt = 0; ; attempt++) {
      let failure: { status?: number; code?: string; retryAfterMs?: number; cause?: unknown };
      try {
        // Synchronous up to the fetch unless it compresses: a hidden page's keepalive request
        // leaves before the page-hide handler returns.
        const plain = this.request(path, { ...body, sent_at: isoTime(this.now()) }, keepalive);
        const init = this.compresses(path, plain, keepalive) ? await gzipped(plain) : plain;
        const { status, headers: answerHeaders, text } = await this.attempt(url, init);
        if (status >= 200 && status < 300) return JSON.parse(text) as T;
        const detail = errorDetail(status, text);
        if (!isRetryableStatus(status)) throw new EventRejectedError(status, detail.error, detail);
        failure = { status, code: detail.error.code, retryAfterMs: parseRetryAfter(answerHeaders.get('retry-after')) };
      } catch (error) {
        if (error instanceof EventRejectedError) throw error;
        failure = { cause: error }; // the network, a timeout, or an answer cut short
      }
      if (attempt >= maxRetries) {
        const what = failure.status === undefined ? describe(failure.cause) : `HTTP ${failure.status} ${failure.code ?? ''}`.trim();
        throw new EventDeliveryError(
          `POST ${path} failed after ${attempt + 1} attempt(s): ${what}`,
          attempt + 1,
          failure.status,
          failure.code,
          failure.cause,
        );
      }
      await sleep(retryDelay(attempt, failure.retryAfterMs, this.policy));
    }
  }

  /** The request for a JSON body. */
  private request(path: string, body: object, keepalive: boolean): RequestInit & { headers: Record<string, string>; body: string } {
    const headers: Record<string, string> = { 'Content-Type': 'application/json' };
    if (this.apiKey !== undefined) headers['X-API-Key'] = this.apiKey;
    const init = { method: 'POST', headers, body: JSON.stringify(body) };
    return keepalive ? { ...init, keepalive: true } : init;
  }

  /** Batches of `compressAboveBytes` or more go gzipped, where the runtime can; keepalives never. */
  private compresses(path: string, init: { body: string }, keepalive: boolean): boolean {
    return !keepalive && path === '/api/events' && init.body.length >= this.compressAboveBytes && typeof CompressionStream === 'function';
  }

  /** One request, body read included, within `timeoutMs`. */
  private async attempt(url: string, init: RequestInit): Promise<{ status: number; headers: Headers; text: string }> {
    const controller = new AbortController();
    const timer = this.timeoutMs > 0 ? setTimeout(() => controller.abort(), this.timeoutMs) : undefined;
    try {
      const response = await this.fetchImpl(url, { ...init, signal: controller.signal });
      return { status: response.status, headers: response.headers, text: await response.text() };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }
}

const ANONYMOUS_ID_KEY = 'event-ingest.anonymous_id';
const USER_ID_KEY = 'event-ingest.user_id';

/** `localStorage` where the runtime has one, else nothing (memory only). */
function defaultStorage(): IdStorage | undefined {
  try {
    return (globalThis as { localStorage?: IdStorage }).localStorage;
  } catch {
    return undefined; // access itself throws in some private modes
  }
}

/**
 * `storage` with a copy in memory: reads prefer what was stored, and a storage that throws (a
 * full quota, a private mode) or drops writes still keeps the ids for this page's life.
 */
function mirrored(storage: IdStorage | undefined): IdStorage {
  const memory = new Map<string, string>();
  const attempt = <T>(action: () => T): T | undefined => {
    try {
      return action();
    } catch {
      return undefined;
    }
  };
  return {
    getItem: (key) => attempt(() => storage?.getItem(key)) ?? memory.get(key) ?? null,
    setItem: (key, value) => {
      memory.set(key, value);
      attempt(() => storage?.setItem(key, value));
    },
    removeItem: (key) => {
      memory.delete(key);
      attempt(() => storage?.removeItem(key));
    },
  };
}

/** The request with its body (UTF-8 text) gzip-compressed by the runtime's `CompressionStream`. */
async function gzipped(init: { headers: Record<string, string>; body: string }): Promise<RequestInit> {
  const stream = new Blob([init.body]).stream().pipeThrough(new CompressionStream('gzip'));
  const body = new Uint8Array(await new Response(stream).arrayBuffer());
  return { ...init, headers: { ...init.headers, 'Content-Encoding': 'gzip' }, body };
}

/** The error body of an answer, or one made up from the status when it is not the service's. */
function errorDetail(status: number, text: string): ApiErrorBody {
  try {
    const body = JSON.parse(text) as { error?: Partial<ApiErrorDetail> } | null;
    const error = body?.error;
    if (typeof error?.code === 'string') {
      const detail: ApiErrorDetail = { code: error.code, message: error.message ?? error.code };
      if (typeof error.field === 'string') detail.field = error.field;
      return { success: false, error: detail };
    }
  } catch {
    // not JSON: a proxy's page, say
  }
  return { success: false, error: { code: `http_${status}`, message: text.slice(0, 200) || `HTTP ${status}` } };
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message} (${cause.message})` : error.message;
  }
  return String(error);
}

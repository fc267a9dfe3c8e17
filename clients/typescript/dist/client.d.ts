import type { ApiErrorDetail, BatchResponse, EventPayload, EventType, FlushResult, IdentifyResponse, IdStorage, LogEventResponse, Metadata, QueuedEvent } from './types.js';
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
/** A client of the event-ingest service: single events, batches, and a batching queue. */
export declare class EventClient {
    readonly baseUrl: string;
    private readonly apiKey;
    private readonly fetchImpl;
    private readonly policy;
    private readonly timeoutMs;
    private readonly compressAboveBytes;
    private readonly now;
    private readonly queue;
    private readonly unwatch;
    private readonly storage;
    constructor(options?: EventClientOptions);
    /**
     * Sends one event now, as the seed's `logEvent` did, and resolves to the service's answer,
     * `{"success": true, "message": "Event logged: view"}`. The event gets an `event_id`, so the
     * retries (network errors, timeouts, 408, 429, 5xx; `Retry-After` honoured) store it once, and
     * a `timestamp`, so that it is stored at the time of the call whenever an attempt lands.
     * Throws `EventRejectedError` on any other 4xx, `EventDeliveryError` when the retries run out.
     */
    logEvent(userId: number | null | undefined, asin: string, eventType: EventType, metadata?: Metadata): Promise<LogEventResponse>;
    /** `logEvent` for a whole event; an `event_id` and a `timestamp` are added when it has none. */
    send(event: EventPayload): Promise<LogEventResponse>;
    /**
     * Sends up to 500 events in one `POST /api/events`, with the same retries as `logEvent`, and
     * resolves to the per-event results. Events without an `event_id` or a `timestamp` get one.
     */
    sendBatch(events: EventPayload[]): Promise<BatchResponse>;
    /**
     * Queues an event for the next batch and returns its `event_id`. The queue is sent when
     * `maxBatch` events wait, after `flushIntervalMs`, on `flush()`, and when the page is hidden.
     */
    track(userId: number | null | undefined, asin: string, eventType: EventType, metadata?: Metadata): string;
    /**
     * The visitor's anonymous id: the one kept in `storage`, or a new one (a UUIDv7), kept there.
     * Events logged without a user id carry it until `identify` is called.
     */
    get anonymousId(): string;
    /** The user `identify` named, until `reset`; events logged without a user id carry it. */
    get userId(): number | undefined;
    /**
     * The visitor logged in as `userId`: the service merges the visitor's context into the user's
     * and attributes the visitor's stored events to the user. Events already queued are sent first
     * (if they cannot be, it throws their delivery error and identifies nobody); from now on, events
     * logged without a user id carry `userId`. Retried like `logEvent`; calling it again is
     * harmless. Identifying another user without `reset()` between starts a new visitor first.
     */
    identify(userId: number): Promise<IdentifyResponse>;
    /** The user logged out: forget them, and start a new visitor (a new anonymous id). */
    reset(): void;
    /** Who an event is by: the user given, else the identified user, else the visitor. */
    private actor;
    /** Sends every queued event now; resolves when the service has answered for them (or gave up). */
    flush(): Promise<FlushResult>;
    /**
     * Hands the queue over to `navigator.sendBeacon` (or, with an API key, which a beacon cannot
     * carry, to `fetch` with `keepalive`), as the page-hide listener does. Returns the number of
     * events handed over; the rest (a beacon refused) stay queued for the next flush.
     */
    flushOnHide(): number;
    /** Events queued and not yet answered for. */
    get queueSize(): number;
    /** Stops the timers and page listeners and sends what is queued. */
    close(): Promise<FlushResult>;
    private unloadSender;
    /** The event with an `event_id` and a `timestamp`, added where it has none. */
    private stamped;
    /**
     * One POST with its retries; resolves to the parsed answer of a 2xx. `body` (an event, or a
     * batch's envelope) gets the `sent_at` of each attempt.
     */
    private post;
    /** The request for a JSON body. */
    private request;
    /** Batches of `compressAboveBytes` or more go gzipped, where the runtime can; keepalives never. */
    private compresses;
    /** One request, body read included, within `timeoutMs`. */
    private attempt;
}

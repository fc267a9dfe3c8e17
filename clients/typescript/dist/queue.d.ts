import type { ApiErrorDetail, BatchResponse, FlushResult, QueuedEvent } from './types.js';
/** The most events `POST /api/events` takes in one request. */
export declare const MAX_BATCH_EVENTS = 500;
export interface QueueOptions {
    /** Events per request; a flush starts as soon as this many are waiting. */
    maxBatch: number;
    /** How long the first waiting event waits before a flush. */
    flushIntervalMs: number;
    /** Events held at most (waiting and in flight); beyond it the oldest waiting ones are dropped. */
    maxQueue: number;
    /** The pause before the next automatic flush after a batch could not be delivered. */
    retryLaterMs: number;
    onRejected?: ((event: QueuedEvent, error: ApiErrorDetail) => void) | undefined;
    onDropped?: ((events: QueuedEvent[]) => void) | undefined;
    onError?: ((error: unknown, events: QueuedEvent[]) => void) | undefined;
}
/** Sends one batch, with retries; throws `EventRejectedError` or `EventDeliveryError`. */
export type BatchSender = (events: QueuedEvent[]) => Promise<BatchResponse>;
/**
 * Hands events over while the page goes away: `true` when taken (sendBeacon queued them), `false`
 * when not (keep them), or a promise of the answer (a keepalive fetch).
 */
export type UnloadSender = (events: QueuedEvent[]) => boolean | Promise<BatchResponse>;
/**
 * The batching queue. One delivery runs at a time; a batch stays in memory until the service has
 * answered for it, and goes back to the head of the queue when it could not be delivered.
 */
export declare class EventQueue {
    private readonly send;
    private readonly options;
    private pending;
    private inflight;
    private timer;
    /** The delivery running now; it goes on until nothing waits, so a flush meanwhile joins it. */
    private current;
    private stopped;
    /** After a failed delivery, no flush because of a full batch before this time. */
    private retryAt;
    constructor(send: BatchSender, options: QueueOptions);
    /** Events held: waiting, and in the batch being delivered. */
    get size(): number;
    push(event: QueuedEvent): void;
    /**
     * Sends everything waiting, in batches of `maxBatch`, one after the other, and resolves when
     * nothing waits any more or a batch could not be delivered. A flush while one runs joins it.
     */
    flush(): Promise<FlushResult>;
    /**
     * Sends every held event through `sender` in chunks of at most `maxBatch` events and `maxBytes`
     * bytes of JSON, for a page that is being hidden or unloaded. Events of the batch in flight go
     * too (the service stores a repeated `event_id` once). Stops at the first chunk not taken, whose
     * events stay queued. Returns the number of events handed over.
     */
    flushOnUnload(sender: UnloadSender, maxBytes: number): number;
    /** No more automatic flushes. */
    stop(): void;
    private drain;
    /** One batch; a 413 splits it in halves until the halves fit. */
    private deliver;
    /**
     * Reads a batch answer: counts the accepted events, reports the rejected ones (only those of
     * `only` when given: the others belong to a delivery that reports them itself).
     */
    private settle;
    private reject;
    /** A delivery that did not get through: its events go back to the head of the queue. */
    private failed;
    /** Drops the oldest waiting events beyond `maxQueue`. */
    private trim;
    private schedule;
    private clearTimer;
}
/** Splits events into chunks of at most `maxEvents` events and about `maxBytes` bytes of JSON. */
export declare function chunks(events: QueuedEvent[], maxEvents: number, maxBytes: number): QueuedEvent[][];

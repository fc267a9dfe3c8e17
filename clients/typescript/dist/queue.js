import { EventRejectedError } from './errors.js';
/** The most events `POST /api/events` takes in one request. */
export const MAX_BATCH_EVENTS = 500;
/**
 * The batching queue. One delivery runs at a time; a batch stays in memory until the service has
 * answered for it, and goes back to the head of the queue when it could not be delivered.
 */
export class EventQueue {
    send;
    options;
    pending = [];
    inflight = [];
    timer;
    /** The delivery running now; it goes on until nothing waits, so a flush meanwhile joins it. */
    current;
    stopped = false;
    /** After a failed delivery, no flush because of a full batch before this time. */
    retryAt = 0;
    constructor(send, options) {
        this.send = send;
        this.options = options;
    }
    /** Events held: waiting, and in the batch being delivered. */
    get size() {
        return this.pending.length + this.inflight.length;
    }
    push(event) {
        this.pending.push(event);
        this.trim();
        if (this.pending.length >= this.options.maxBatch && Date.now() >= this.retryAt)
            void this.flush();
        this.schedule(this.options.flushIntervalMs);
    }
    /**
     * Sends everything waiting, in batches of `maxBatch`, one after the other, and resolves when
     * nothing waits any more or a batch could not be delivered. A flush while one runs joins it.
     */
    flush() {
        if (this.current === undefined)
            this.current = this.drain();
        return this.current;
    }
    /**
     * Sends every held event through `sender` in chunks of at most `maxBatch` events and `maxBytes`
     * bytes of JSON, for a page that is being hidden or unloaded. Events of the batch in flight go
     * too (the service stores a repeated `event_id` once). Stops at the first chunk not taken, whose
     * events stay queued. Returns the number of events handed over.
     */
    flushOnUnload(sender, maxBytes) {
        this.clearTimer();
        const waiting = new Set(this.pending);
        const events = [...this.inflight, ...this.pending];
        let handed = 0;
        for (const chunk of chunks(events, this.options.maxBatch, maxBytes)) {
            let outcome;
            try {
                outcome = sender(chunk);
            }
            catch {
                outcome = false;
            }
            if (outcome === false)
                break;
            const mine = new Set(chunk.filter((event) => waiting.has(event)));
            this.pending = this.pending.filter((event) => !mine.has(event));
            handed += chunk.length;
            if (outcome !== true) {
                outcome.then((response) => this.settle(chunk, response, mine), (error) => this.failed([...mine], error));
            }
        }
        if (this.pending.length > 0)
            this.schedule(this.options.flushIntervalMs);
        return handed;
    }
    /** No more automatic flushes. */
    stop() {
        this.stopped = true;
        this.clearTimer();
    }
    async drain() {
        this.clearTimer();
        await undefined; // flush() records this run before it can end (and clear `current`)
        const result = { accepted: 0, rejected: [], pending: 0 };
        try {
            while (this.pending.length > 0) {
                const batch = this.pending.splice(0, this.options.maxBatch);
                this.inflight = batch;
                try {
                    const outcome = await this.deliver(batch);
                    result.accepted += outcome.accepted;
                    result.rejected.push(...outcome.rejected);
                }
                catch (error) {
                    this.inflight = [];
                    if (error instanceof EventRejectedError) {
                        // The whole request was refused (wrong key, ...): every event of it is rejected.
                        result.rejected.push(...this.reject(batch, error.detail));
                        continue;
                    }
                    result.error = error;
                    this.failed(batch, error);
                    break;
                }
                this.inflight = [];
            }
        }
        finally {
            this.inflight = [];
            this.current = undefined;
        }
        result.pending = this.size;
        return result;
    }
    /** One batch; a 413 splits it in halves until the halves fit. */
    async deliver(batch) {
        let response;
        try {
            response = await this.send(batch);
        }
        catch (error) {
            if (error instanceof EventRejectedError && error.status === 413 && batch.length > 1) {
                const middle = Math.ceil(batch.length / 2);
                const first = await this.deliver(batch.slice(0, middle));
                const second = await this.deliver(batch.slice(middle));
                return { accepted: first.accepted + second.accepted, rejected: [...first.rejected, ...second.rejected] };
            }
            throw error;
        }
        return this.settle(batch, response);
    }
    /**
     * Reads a batch answer: counts the accepted events, reports the rejected ones (only those of
     * `only` when given: the others belong to a delivery that reports them itself).
     */
    settle(batch, response, only) {
        const rejected = [];
        let accepted = 0;
        for (const item of response.results ?? []) {
            const event = batch[item.index];
            if (event === undefined || (only !== undefined && !only.has(event)))
                continue;
            if (item.status === 'accepted')
                accepted += 1;
            else
                rejected.push(...this.reject([event], item.error));
        }
        return { accepted, rejected };
    }
    reject(events, error) {
        for (const event of events)
            call(this.options.onRejected, event, error);
        return events.map((event) => ({ event, error }));
    }
    /** A delivery that did not get through: its events go back to the head of the queue. */
    failed(events, error) {
        if (error instanceof EventRejectedError) {
            this.reject(events, error.detail);
            return;
        }
        const held = new Set(this.pending);
        this.pending.unshift(...events.filter((event) => !held.has(event)));
        this.trim();
        call(this.options.onError, error, events);
        const pause = Math.max(this.options.flushIntervalMs, this.options.retryLaterMs);
        this.retryAt = Date.now() + pause;
        this.schedule(pause);
    }
    /** Drops the oldest waiting events beyond `maxQueue`. */
    trim() {
        const excess = this.size - this.options.maxQueue;
        if (excess <= 0 || this.pending.length === 0)
            return;
        const dropped = this.pending.splice(0, Math.min(excess, this.pending.length));
        call(this.options.onDropped, dropped);
    }
    schedule(delayMs) {
        if (this.stopped || this.timer !== undefined || this.pending.length === 0)
            return;
        const timer = setTimeout(() => {
            this.timer = undefined;
            void this.flush();
        }, delayMs);
        // In Node, a pending flush must not keep the process alive; call flush() or close() before exit.
        timer.unref?.();
        this.timer = timer;
    }
    clearTimer() {
        if (this.timer !== undefined)
            clearTimeout(this.timer);
        this.timer = undefined;
    }
}
/** Splits events into chunks of at most `maxEvents` events and about `maxBytes` bytes of JSON. */
export function chunks(events, maxEvents, maxBytes) {
    const encoder = new TextEncoder();
    const envelope = encoder.encode('{"events":[],"sent_at":"2026-11-29T00:00:00.000Z"}').length;
    const out = [];
    let current = [];
    let bytes = envelope;
    for (const event of events) {
        const size = encoder.encode(JSON.stringify(event)).length + 1;
        if (current.length > 0 && (current.length >= maxEvents || bytes + size > maxBytes)) {
            out.push(current);
            current = [];
            bytes = envelope;
        }
        current.push(event);
        bytes += size;
    }
    if (current.length > 0)
        out.push(current);
    return out;
}
/** Calls a user callback; an exception in it must not break the queue. */
function call(callback, ...args) {
    if (callback === undefined)
        return;
    try {
        callback(...args);
    }
    catch (error) {
        console.error('event-ingest client: callback threw', error);
    }
}

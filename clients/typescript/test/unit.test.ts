/** The parts that need no service: the retry arithmetic, ids, chunking, timeouts, 413 splitting. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  backoffDelay,
  EventClient,
  EventDeliveryError,
  isRetryableStatus,
  newEventId,
  parseRetryAfter,
  retryDelay,
  type QueuedEvent,
} from '../dist/index.js';
import { chunks } from '../dist/queue.js';
import { installFakeBrowser } from './browser.ts';
import { sentJson, waitFor } from './service.ts';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const policy = { maxRetries: 5, baseDelayMs: 200, maxDelayMs: 10_000 };

describe('Retry-After', () => {
  it('reads delay-seconds', () => {
    assert.equal(parseRetryAfter('1'), 1000);
    assert.equal(parseRetryAfter(' 30 '), 30_000);
    assert.equal(parseRetryAfter('0'), 0);
  });

  it('reads an HTTP date, relative to now, never negative', () => {
    const now = Date.parse('Sat, 28 Nov 2026 12:00:00 GMT');
    assert.equal(parseRetryAfter('Sat, 28 Nov 2026 12:00:03 GMT', now), 3000);
    assert.equal(parseRetryAfter('Sat, 28 Nov 2026 11:59:00 GMT', now), 0);
  });

  it('ignores what is neither', () => {
    for (const value of [null, undefined, '', 'soon', '-1', '1.5']) assert.equal(parseRetryAfter(value), undefined, String(value));
  });
});

describe('backoff', () => {
  it('is exponential with full jitter, capped', () => {
    const top = () => 0.999999;
    assert.equal(backoffDelay(0, policy, () => 0), 0);
    assert.equal(backoffDelay(0, policy, top), 199);
    assert.equal(backoffDelay(1, policy, top), 399);
    assert.equal(backoffDelay(3, policy, top), 1599);
    assert.equal(backoffDelay(10, policy, top), 9999);
    assert.equal(backoffDelay(1000, policy, top), 9999);
    for (let i = 0; i < 100; i++) {
      const delay = backoffDelay(2, policy);
      assert.ok(delay >= 0 && delay < 800);
    }
  });

  it('waits at least Retry-After, even beyond maxDelayMs', () => {
    assert.equal(retryDelay(0, 1000, policy, () => 0), 1000);
    assert.equal(retryDelay(0, 1000, policy, () => 0.5), 1100);
    assert.equal(retryDelay(4, 60_000, policy, () => 0), 60_000);
    assert.equal(retryDelay(1, undefined, policy, () => 0.5), 200);
  });

  it('retries 408, 429 and 5xx only', () => {
    for (const status of [408, 429, 500, 502, 503, 504]) assert.ok(isRetryableStatus(status), String(status));
    for (const status of [400, 401, 403, 404, 413, 415, 422]) assert.ok(!isRetryableStatus(status), String(status));
  });
});

describe('event ids', () => {
  it('are v7 UUIDs: the time in milliseconds first, so that they sort by time', () => {
    const at = Date.parse('2026-11-29T13:35:47.123Z');
    const id = newEventId(at);
    assert.match(id, UUID_V7);
    assert.equal(parseInt(id.replaceAll('-', '').slice(0, 12), 16), at);
    const ids = Array.from({ length: 1000 }, (_, i) => newEventId(at + i));
    assert.deepEqual([...ids].sort(), ids, 'later ids sort after earlier ones');
    assert.equal(new Set(Array.from({ length: 1000 }, () => newEventId(at))).size, 1000, '74 random bits');
  });

  it('need no crypto.randomUUID (plain http pages) and no crypto at all', () => {
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, 'crypto')!;
    const real = globalThis.crypto;
    try {
      for (const value of [{ getRandomValues: (a: Uint8Array<ArrayBuffer>) => real.getRandomValues(a) }, undefined]) {
        Object.defineProperty(globalThis, 'crypto', { value, configurable: true });
        const ids = new Set(Array.from({ length: 100 }, () => newEventId()));
        assert.equal(ids.size, 100);
        for (const id of ids) assert.match(id, UUID_V7);
      }
    } finally {
      Object.defineProperty(globalThis, 'crypto', descriptor);
    }
  });
});

describe('chunks', () => {
  const event = (i: number, pad = 0): QueuedEvent => ({
    user_id: 1, asin: 'B08XXXX', event_type: 'view', event_id: String(i), timestamp: '2026-11-29T00:00:00.000Z', metadata: { pad: 'x'.repeat(pad) },
  });

  it('cuts by count and by bytes, keeping the order', () => {
    const events = Array.from({ length: 7 }, (_, i) => event(i));
    assert.deepEqual(chunks(events, 3, 1e9).map((c) => c.length), [3, 3, 1]);
    const big = Array.from({ length: 5 }, (_, i) => event(i, 400));
    const cut = chunks(big, 100, 1200);
    assert.deepEqual(cut.map((c) => c.length), [2, 2, 1]);
    assert.deepEqual(cut.flat(), big);
    const sentAt = new Date().toISOString();
    for (const c of cut) assert.ok(new TextEncoder().encode(JSON.stringify({ events: c, sent_at: sentAt })).length <= 1200);
  });
});

/** A fetch answering like /api/events, and 413 for batches over `limit` events. */
function fakeBatchService(limit: number) {
  const sizes: number[] = [];
  const fetch: typeof globalThis.fetch = async (_input, init) => {
    const events: QueuedEvent[] = sentJson(init).events;
    sizes.push(events.length);
    if (events.length > limit) {
      return new Response(JSON.stringify({ success: false, error: { code: 'body_too_large', message: 'too large' } }), { status: 413 });
    }
    const results = events.map((e, index) => ({ index, status: 'accepted', event_id: e.event_id }));
    return Response.json({ success: true, accepted: events.length, rejected: 0, results });
  };
  return { fetch, sizes };
}

describe('EventClient, with a fake fetch', () => {
  it('halves a batch answered 413 until it fits', async () => {
    const { fetch, sizes } = fakeBatchService(2);
    const client = new EventClient({ fetch, flushIntervalMs: 60_000, flushOnPageHide: false });
    for (let i = 0; i < 5; i++) client.track(1, 'B08XXXX', 'view');
    const result = await client.flush();
    assert.equal(result.accepted, 5);
    assert.deepEqual(sizes, [5, 3, 2, 1, 2]);
  });

  it('gives up an attempt after timeoutMs and retries it', async () => {
    let attempts = 0;
    const hang: typeof globalThis.fetch = (_input, init) => {
      attempts += 1;
      return new Promise((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      });
    };
    const client = new EventClient({ fetch: hang, timeoutMs: 50, maxRetries: 1, baseDelayMs: 10, flushOnPageHide: false });
    const started = Date.now();
    await assert.rejects(client.logEvent(1, 'B08XXXX', 'view'), (error: unknown) => {
      assert.ok(error instanceof EventDeliveryError);
      assert.equal(error.attempts, 2);
      assert.equal((error.cause as Error).name, 'AbortError');
      return true;
    });
    assert.equal(attempts, 2);
    assert.ok(Date.now() - started >= 100);
  });

  it('puts events back when the keepalive fetch of a hidden page fails', async () => {
    const browser = installFakeBrowser();
    try {
      let calls = 0;
      const down: typeof globalThis.fetch = async () => {
        calls += 1;
        throw new TypeError('fetch failed');
      };
      const errors: unknown[] = [];
      const client = new EventClient({ apiKey: 'k', fetch: down, maxRetries: 0, flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
      client.track(1, 'B08XXXX', 'view');
      client.track(1, 'B08XXXX', 'click');
      browser.document.hide();
      assert.equal(calls, 1);
      await waitFor(() => errors.length === 1, { what: 'onError' });
      assert.ok(errors[0] instanceof EventDeliveryError);
      assert.equal(client.queueSize, 2);
      const closed = await client.close();
      assert.equal(closed.pending, 2, 'still kept when the last flush cannot deliver');
    } finally {
      browser.restore();
    }
  });
});

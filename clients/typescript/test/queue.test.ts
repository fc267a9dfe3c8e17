import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventClient, type ApiErrorDetail, type QueuedEvent } from '../dist/index.js';
import { recordingFetch, sentJson, useService, waitFor, waitForStored } from './service.ts';

const service = useService();

function batchSizes(calls: { url: string; init: RequestInit | undefined }[]): number[] {
  return calls
    .filter((call) => call.url.endsWith('/api/events'))
    .map((call) => sentJson(call.init).events.length);
}

describe('the queue', () => {
  it('gzips a batch above compressAboveBytes, which the service inflates and stores', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000 });
    const ids = Array.from({ length: 50 }, (_, i) => client.track(11, 'B0TS000001', 'view', { i }));

    const result = await client.flush();

    assert.equal(result.accepted, 50);
    const headers = calls[0]!.init?.headers as Record<string, string>;
    assert.equal(headers['Content-Encoding'], 'gzip');
    assert.ok(calls[0]!.init?.body instanceof Uint8Array);
    assert.deepEqual(sentJson(calls[0]!.init).events.map((e: QueuedEvent) => e.event_id), ids);
    const stored = await waitForStored(service(), ids);
    assert.equal(stored.size, 50);
    await client.close();
  });

  it('sends small batches, and any batch with compressAboveBytes: Infinity, as plain JSON', async () => {
    const { fetch, calls } = recordingFetch();
    const small = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000 });
    small.track(12, 'B0TS000001', 'view');
    assert.equal((await small.flush()).accepted, 1);
    const off = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000, compressAboveBytes: Infinity });
    for (let i = 0; i < 50; i++) off.track(12, 'B0TS000001', 'view', { i });
    assert.equal((await off.flush()).accepted, 50);

    for (const call of calls) {
      assert.equal((call.init?.headers as Record<string, string>)['Content-Encoding'], undefined);
      assert.equal(typeof call.init?.body, 'string');
    }
    await small.close();
    await off.close();
  });

  it('sends 250 tracked events as 3 requests, and stores each once', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000 });
    const ids: string[] = [];
    for (let i = 0; i < 250; i++) ids.push(client.track(10, 'B0TS000001', 'view', { i }));
    assert.equal(new Set(ids).size, 250);

    const result = await client.flush();

    assert.equal(result.accepted, 250);
    assert.deepEqual(result.rejected, []);
    assert.equal(result.pending, 0);
    assert.equal(result.error, undefined);
    assert.deepEqual(batchSizes(calls), [100, 100, 50]);
    assert.equal(calls.length, 3);
    const sentIds = calls.flatMap((call) => sentJson(call.init).events.map((e: QueuedEvent) => e.event_id));
    assert.deepEqual(sentIds, ids, 'sent in order, each once');

    const stored = await waitForStored(service(), ids);
    assert.equal(stored.size, 250);
    assert.ok([...stored.values()].every((count) => count === 1));
    assert.equal(
      await service().psql(`SELECT count(*) FROM interaction_logs WHERE user_id = 10`),
      '250',
    );
    assert.equal(client.queueSize, 0);
    await client.close();
  });

  it('sends a full batch at once, without flush()', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, maxBatch: 10, flushIntervalMs: 60_000 });
    const ids = Array.from({ length: 10 }, () => client.track(11, 'B0TS000002', 'click'));
    await waitForStored(service(), ids);
    assert.deepEqual(batchSizes(calls), [10]);
    await client.close();
  });

  it('sends what waits after flushIntervalMs', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 100 });
    const started = Date.now();
    const ids = [client.track(12, 'B0TS000003', 'view'), client.track(12, 'B0TS000003', 'add_to_cart')];
    assert.equal(calls.length, 0);
    await waitForStored(service(), ids);
    assert.deepEqual(batchSizes(calls), [2]);
    assert.ok(calls[0]!.at - started >= 90, `sent after ${calls[0]!.at - started} ms`);
    await client.close();
  });

  it('reports rejected events through onRejected and stores the others', async () => {
    const rejected: { event: QueuedEvent; error: ApiErrorDetail }[] = [];
    const client = new EventClient({
      baseUrl: service().baseUrl,
      flushIntervalMs: 60_000,
      onRejected: (event, error) => rejected.push({ event, error }),
    });
    const good = client.track(13, 'B08XXXX', 'purchase', { price: 9.99 });
    const badType = client.track(13, 'B08XXXX', 'like' as 'view');
    const badAsin = client.track(13, 'not an asin', 'view');

    const result = await client.flush();

    assert.equal(result.accepted, 1);
    assert.deepEqual(
      result.rejected.map((r) => [r.event.event_id, r.error.code, r.error.field]),
      [
        [badType, 'invalid_field', 'event_type'],
        [badAsin, 'invalid_field', 'asin'],
      ],
    );
    assert.deepEqual(rejected.map((r) => r.event.event_id), [badType, badAsin]);
    const stored = await waitForStored(service(), [good]);
    assert.equal(stored.get(good), 1);
    assert.equal(await service().psql(`SELECT count(*) FROM interaction_logs WHERE user_id = 13`), '1');
    await client.close();
  });

  it('holds at most maxQueue events, dropping the oldest', async () => {
    const dropped: QueuedEvent[] = [];
    const client = new EventClient({
      baseUrl: service().baseUrl,
      maxBatch: 2,
      maxQueue: 5,
      flushIntervalMs: 60_000,
      onDropped: (events) => dropped.push(...events),
    });
    const ids = Array.from({ length: 7 }, (_, i) => client.track(14, 'B0TS000001', 'view', { i }));
    assert.deepEqual(dropped.map((e) => e.event_id), ids.slice(0, 2));
    assert.equal(client.queueSize, 5);

    const result = await client.flush();
    assert.equal(result.accepted, 5);
    await waitForStored(service(), ids.slice(2));
    assert.equal(await service().psql(`SELECT count(*) FROM interaction_logs WHERE user_id = 14`), '5');
    await client.close();
  });

  it('close() sends what is queued', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl, flushIntervalMs: 60_000 });
    const id = client.track(15, 'B0TS000002', 'rate', { stars: 5 });
    const result = await client.close();
    assert.equal(result.accepted, 1);
    await waitFor(async () => (await service().psql(`SELECT metadata->>'stars' FROM interaction_logs WHERE event_id = '${id}'`)) === '5', {
      what: 'the event',
    });
  });
});

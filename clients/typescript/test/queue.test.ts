import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventClient, type ApiErrorDetail, type QueuedEvent } from '../dist/index.js';
import { recordingFetch, useService, waitFor, waitForStored } from './service.ts';

const service = useService();

function batchSizes(calls: { url: string; init: RequestInit | undefined }[]): number[] {
  return calls
    .filter((call) => call.url.endsWith('/api/events'))
    .map((call) => JSON.parse(String(call.init?.body)).events.length);
}

describe('the queue', () => {
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
    const sentIds = calls.flatMap((call) => JSON.parse(String(call.init?.body)).events.map((e: QueuedEvent) => e.event_id));
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

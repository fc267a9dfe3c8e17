import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EventClient, EventDeliveryError, type QueuedEvent } from '../dist/index.js';
import { FaultProxy } from './proxy.ts';
import { useService, waitForStored } from './service.ts';

const service = useService();
let proxy: FaultProxy;
let proxyUrl: string;


function reset(): void {
  proxy.plan.length = 0;
  proxy.seen.length = 0;
}

const eventIdOf = (body: string): string => JSON.parse(body).event_id;
const eventIdsOf = (body: string): string[] => JSON.parse(body).events.map((e: QueuedEvent) => e.event_id);

describe('retries', () => {
  // In a suite: Node 20 runs root-level hooks concurrently, so the service may not be up before it.
  before(async () => {
    proxy = new FaultProxy(service().baseUrl);
    proxyUrl = await proxy.start();
  });
  after(async () => {
    await proxy?.close();
  });

  it('logEvent waits out 503 and 429 with Retry-After, retries with the same event_id, stores once', async () => {
    reset();
    proxy.plan.push({ status: 503, retryAfter: '1' }, { status: 429, retryAfter: '1' });
    const client = new EventClient({ baseUrl: proxyUrl, baseDelayMs: 50 });

    const answer = await client.logEvent(20, 'B0TS000001', 'view', { page: 'product_detail' });

    assert.deepEqual(answer, { success: true, message: 'Event logged: view' });
    const seen = proxy.on('/api/event');
    assert.equal(seen.length, 3);
    const ids = seen.map((s) => eventIdOf(s.body));
    assert.equal(new Set(ids).size, 1, 'every attempt carries the same event_id');
    for (const [earlier, later] of [[0, 1], [1, 2]] as const) {
      const gap = seen[later]!.at - seen[earlier]!.at;
      assert.ok(gap >= 1000, `retry ${later} came ${gap} ms after the Retry-After: 1 answer`);
    }
    const stored = await waitForStored(service(), [ids[0]!]);
    assert.equal(stored.get(ids[0]!), 1);
  });

  it('honours a Retry-After given as an HTTP date', async () => {
    reset();
    const retryAfter = new Date(Date.now() + 2000).toUTCString();
    proxy.plan.push({ status: 503, retryAfter });
    const client = new EventClient({ baseUrl: proxyUrl, baseDelayMs: 50 });

    await client.logEvent(20, 'B0TS000001', 'click');

    const seen = proxy.on('/api/event');
    assert.equal(seen.length, 2);
    assert.ok(seen[1]!.at >= Date.parse(retryAfter), `retried at ${new Date(seen[1]!.at).toISOString()}, told ${retryAfter}`);
  });

  it('retries 408 and 502 with backoff', async () => {
    reset();
    proxy.plan.push({ status: 408, code: 'body_timeout' }, { status: 502, code: 'bad_gateway' });
    const client = new EventClient({ baseUrl: proxyUrl, baseDelayMs: 20 });
    assert.deepEqual(await client.logEvent(20, 'B0TS000002', 'rate'), { success: true, message: 'Event logged: rate' });
    assert.equal(proxy.on('/api/event').length, 3);
  });

  it('an answer lost after the service took the event: the retry is stored and counted once', async () => {
    reset();
    proxy.plan.push('forward-then-drop');
    const client = new EventClient({ baseUrl: proxyUrl, baseDelayMs: 50 });

    assert.deepEqual(await client.logEvent(21, 'B0TS000003', 'view'), { success: true, message: 'Event logged: view' });

    const seen = proxy.on('/api/event');
    assert.deepEqual(seen.map((s) => s.fault), ['forward-then-drop', 'forward']);
    const id = eventIdOf(seen[0]!.body);
    assert.equal(eventIdOf(seen[1]!.body), id);
    const stored = await waitForStored(service(), [id]);
    assert.equal(stored.get(id), 1);
    const prefix = service().redisPrefix;
    assert.equal(await service().redis('LRANGE', `${prefix}user:21:recent_items`, '0', '-1'), 'B0TS000003');
    assert.equal(await service().redis('HGET', `${prefix}user:21:recent_categories`, 'Books'), '1');
  });

  it('the queue retries a dropped connection and a 503 with the same event_ids', async () => {
    reset();
    proxy.plan.push('drop', { status: 503, retryAfter: '1' });
    const client = new EventClient({ baseUrl: proxyUrl, baseDelayMs: 50, flushIntervalMs: 60_000 });
    const ids = Array.from({ length: 30 }, (_, i) => client.track(22, 'B08XXXX', 'view', { i }));

    const result = await client.flush();

    assert.equal(result.accepted, 30);
    assert.equal(result.error, undefined);
    const seen = proxy.on('/api/events');
    assert.deepEqual(seen.map((s) => s.fault), ['drop', { status: 503, retryAfter: '1' }, 'forward']);
    for (const s of seen) assert.deepEqual(eventIdsOf(s.body), ids);
    assert.ok(seen[2]!.at - seen[1]!.at >= 1000, 'waited for Retry-After');
    const stored = await waitForStored(service(), ids);
    assert.ok([...stored.values()].every((count) => count === 1));
    assert.equal(await service().psql(`SELECT count(*) FROM interaction_logs WHERE user_id = 22`), '30');
    await client.close();
  });

  it('logEvent gives up after maxRetries with EventDeliveryError', async () => {
    reset();
    proxy.plan.push('drop', 'drop', 'drop');
    const client = new EventClient({ baseUrl: proxyUrl, maxRetries: 2, baseDelayMs: 20 });

    await assert.rejects(client.logEvent(23, 'B08XXXX', 'view'), (error: unknown) => {
      assert.ok(error instanceof EventDeliveryError);
      assert.equal(error.attempts, 3);
      assert.equal(error.status, undefined);
      return true;
    });
    const seen = proxy.on('/api/event');
    assert.equal(seen.length, 3);
    assert.equal(new Set(seen.map((s) => eventIdOf(s.body))).size, 1);
  });

  it('the queue keeps a batch it could not deliver, and delivers it on the next flush', async () => {
    reset();
    proxy.plan.push({ status: 503, code: 'overloaded' }, { status: 503, code: 'overloaded' });
    const errors: { error: unknown; events: QueuedEvent[] }[] = [];
    const client = new EventClient({
      baseUrl: proxyUrl,
      maxRetries: 1,
      baseDelayMs: 20,
      flushIntervalMs: 60_000,
      onError: (error, events) => errors.push({ error, events }),
    });
    const ids = Array.from({ length: 5 }, () => client.track(24, 'B0TS000001', 'click'));

    const failed = await client.flush();
    assert.ok(failed.error instanceof EventDeliveryError);
    assert.equal(failed.error.status, 503);
    assert.equal(failed.error.code, 'overloaded');
    assert.equal(failed.accepted, 0);
    assert.equal(failed.pending, 5);
    assert.equal(client.queueSize, 5);
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0]!.events.map((e) => e.event_id), ids);

    const retried = await client.flush();
    assert.equal(retried.accepted, 5);
    assert.equal(client.queueSize, 0);
    const seen = proxy.on('/api/events');
    assert.equal(seen.length, 3);
    for (const s of seen) assert.deepEqual(eventIdsOf(s.body), ids);
    const stored = await waitForStored(service(), ids);
    assert.ok([...stored.values()].every((count) => count === 1));
    await client.close();
  });
});

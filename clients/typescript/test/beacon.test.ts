import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { EventClient, type QueuedEvent } from '../dist/index.js';
import { installFakeBrowser, type FakeBrowser } from './browser.ts';
import { recordingFetch, sentJson, useService, waitForStored } from './service.ts';

const service = useService();
let browser: FakeBrowser;

beforeEach(() => {
  browser = installFakeBrowser();
});
afterEach(() => {
  browser.restore();
});

async function beaconEvents(index: number): Promise<QueuedEvent[]> {
  const data = browser.beacons[index]!.data;
  assert.ok(data instanceof Blob, 'the beacon body is a Blob');
  assert.equal(data.type, 'text/plain', 'text/plain needs no CORS preflight');
  return JSON.parse(await data.text()).events;
}

describe('page hidden', () => {
  it('flushes the queue with navigator.sendBeacon when visibilityState becomes hidden', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000 });
    const ids = Array.from({ length: 5 }, (_, i) => client.track(30, 'B0TS000001', 'view', { i }));

    browser.document.show(); // visible: nothing to do
    assert.equal(browser.beacons.length, 0);

    browser.document.hide();

    assert.equal(browser.beacons.length, 1);
    assert.equal(browser.beacons[0]!.url, `${service().baseUrl}/api/events`);
    assert.deepEqual((await beaconEvents(0)).map((e) => e.event_id), ids);
    assert.equal(client.queueSize, 0);
    assert.equal(calls.length, 0, 'no fetch: the beacon carried the events');

    assert.deepEqual(await Promise.all(browser.answers), [
      { success: true, accepted: 5, rejected: 0, results: ids.map((event_id, index) => ({ index, status: 'accepted', event_id })) },
    ]);
    const stored = await waitForStored(service(), ids);
    assert.ok([...stored.values()].every((count) => count === 1));
    await client.close();
  });

  it('flushes on pagehide too', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl, flushIntervalMs: 60_000 });
    const id = client.track(31, 'B0TS000002', 'add_to_cart');
    browser.window.dispatchEvent(new Event('pagehide'));
    assert.equal(browser.beacons.length, 1);
    await waitForStored(service(), [id]);
    await client.close();
  });

  it('keeps the events when sendBeacon refuses them, and sends them on the next flush', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, flushIntervalMs: 60_000 });
    const ids = Array.from({ length: 3 }, () => client.track(32, 'B0TS000003', 'click'));
    browser.accept = false;

    browser.document.hide();

    assert.equal(browser.beacons.length, 1);
    assert.equal(browser.beacons[0]!.accepted, false);
    assert.equal(client.queueSize, 3, 'kept');

    const result = await client.flush();
    assert.equal(result.accepted, 3);
    assert.equal(calls.length, 1);
    assert.deepEqual(sentJson(calls[0]!.init).events.map((e: QueuedEvent) => e.event_id), ids);
    await waitForStored(service(), ids);
    await client.close();
  });

  it('splits a large queue into beacons of at most maxBatch events and 60 KB', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl, maxBatch: 100, flushIntervalMs: 60_000, maxQueue: 1000 });
    // 150 events of about 1 KB: 100 events would be over 60 KB, so the bytes decide.
    const ids = Array.from({ length: 150 }, (_, i) => client.track(33, 'B08XXXX', 'view', { i, pad: 'p'.repeat(1000) }));

    browser.document.hide();

    assert.ok(browser.beacons.length >= 3, `${browser.beacons.length} beacons`);
    const sent: string[] = [];
    for (let i = 0; i < browser.beacons.length; i++) {
      const data = browser.beacons[i]!.data as Blob;
      assert.ok(data.size <= 60_000, `beacon ${i} is ${data.size} bytes`);
      const events = await beaconEvents(i);
      assert.ok(events.length <= 100);
      sent.push(...events.map((e) => e.event_id));
    }
    assert.deepEqual(sent, ids);
    await Promise.all(browser.answers);
    await waitForStored(service(), ids);
    await client.close();
  });

  it('does nothing on hide when flushOnPageHide is false', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl, flushIntervalMs: 60_000, flushOnPageHide: false });
    client.track(34, 'B08XXXX', 'view');
    browser.document.hide();
    assert.equal(browser.beacons.length, 0);
    assert.equal(client.queueSize, 1);
    assert.equal((await client.close()).accepted, 1);
  });
});

/** When events happened: `timestamp` stamped at track or logEvent, `sent_at` at every send. */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { EventClient, type QueuedEvent } from '../dist/index.js';
import { installFakeBrowser, type FakeBrowser } from './browser.ts';
import { recordingFetch, sentJson, useService, waitForStored } from './service.ts';

const service = useService();
const HOUR = 3_600_000;

/** The stored `ts` of an event, in milliseconds since the epoch. */
async function storedTs(eventId: string): Promise<number> {
  await waitForStored(service(), [eventId]);
  const sql = `SELECT (extract(epoch FROM ts) * 1000)::bigint FROM interaction_logs WHERE event_id = '${eventId}'`;
  return Number(await service().psql(sql));
}

function assertNear(actual: number, expected: number, withinMs: number): void {
  assert.ok(Math.abs(actual - expected) <= withinMs, `${new Date(actual).toISOString()} is not within ${withinMs} ms of ${new Date(expected).toISOString()}`);
}

describe('event time', () => {
  let browser: FakeBrowser;
  beforeEach(() => {
    browser = installFakeBrowser();
  });
  afterEach(() => {
    browser.restore();
  });

  it('a device clock an hour fast: tracked events are stored at the true time they happened', async () => {
    const { fetch, calls } = recordingFetch();
    const fast = () => Date.now() + HOUR;
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, now: fast, flushIntervalMs: 60_000 });
    const tracked = Date.now();
    const id = client.track(40, 'B0TS000001', 'view');
    const afterTrack = Date.now();
    await new Promise((done) => setTimeout(done, 300)); // queued for a while before it is sent
    await client.flush();

    const sent = sentJson(calls[0]!.init);
    const stamp = Date.parse(sent.events[0].timestamp);
    assert.ok(tracked + HOUR <= stamp && stamp <= afterTrack + HOUR, 'stamped by the device clock at track');
    assert.ok(Date.parse(sent.sent_at) >= tracked + HOUR + 300, 'sent_at is the time of sending');
    assertNear(await storedTs(id), tracked, 150);
    await client.close();
  });

  it('logEvent keeps the time of the call through its retries, each with its own sent_at', async () => {
    let attempts = 0;
    const bodies: any[] = [];
    const flaky: typeof fetch = async (input, init) => {
      bodies.push(sentJson(init));
      attempts += 1;
      if (attempts === 1) return new Response('{"success":false,"error":{"code":"busy","message":"busy"}}', { status: 503, headers: { 'Retry-After': '1' } });
      return fetch(input, init);
    };
    const client = new EventClient({ baseUrl: service().baseUrl, fetch: flaky, now: () => Date.now() - HOUR, flushOnPageHide: false });
    const called = Date.now();
    await client.logEvent(41, 'B0TS000002', 'click');

    assert.equal(bodies.length, 2);
    assert.equal(bodies[0].timestamp, bodies[1].timestamp);
    assert.ok(Date.parse(bodies[1].sent_at) - Date.parse(bodies[0].sent_at) >= 1000, 'sent_at of each attempt');
    assertNear(await storedTs(bodies[0].event_id), called, 150);
  });

  it('the beacon of a hidden page carries sent_at, and its events their timestamps', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl, now: () => Date.now() + HOUR, flushIntervalMs: 60_000 });
    const tracked = Date.now();
    const id = client.track(42, 'B0TS000003', 'purchase');
    browser.document.hide();

    const body = JSON.parse(await (browser.beacons[0]!.data as Blob).text()) as { events: QueuedEvent[]; sent_at: string };
    assert.ok(Date.parse(body.sent_at) >= tracked + HOUR);
    assert.equal(body.events[0]!.timestamp, new Date(Date.parse(body.events[0]!.timestamp)).toISOString());
    await Promise.all(browser.answers);
    assertNear(await storedTs(id), tracked, 150);
    await client.close();
  });
});

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { EventClient, EventRejectedError, type QueuedEvent } from '../dist/index.js';
import { installFakeBrowser, type FakeBrowser } from './browser.ts';
import { recordingFetch, useService, waitForStored } from './service.ts';

const KEY = 'ts-client-test-key';
const service = useService({ API_KEYS: KEY });

describe('API keys', () => {
  it('a request without the key throws EventRejectedError 401 missing_api_key', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch });
    await assert.rejects(client.logEvent(40, 'B08XXXX', 'view'), (error: unknown) => {
      assert.ok(error instanceof EventRejectedError);
      assert.equal(error.status, 401);
      assert.equal(error.code, 'missing_api_key');
      return true;
    });
    assert.equal(calls.length, 1, '401 is not retried');
  });

  it('a wrong key throws invalid_api_key; the right one is sent as X-API-Key', async () => {
    const wrong = new EventClient({ baseUrl: service().baseUrl, apiKey: 'nope' });
    await assert.rejects(wrong.logEvent(40, 'B08XXXX', 'view'), { name: 'EventRejectedError', status: 401, code: 'invalid_api_key' });

    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, apiKey: KEY, fetch });
    assert.deepEqual(await client.logEvent(40, 'B08XXXX', 'view'), { success: true, message: 'Event logged: view' });
    assert.equal((calls[0]!.init?.headers as Record<string, string>)['X-API-Key'], KEY);
  });

  it('the queue reports every event of a refused batch through onRejected', async () => {
    const rejected: QueuedEvent[] = [];
    const client = new EventClient({
      baseUrl: service().baseUrl,
      apiKey: 'nope',
      flushIntervalMs: 60_000,
      onRejected: (event, error) => {
        assert.equal(error.code, 'invalid_api_key');
        rejected.push(event);
      },
    });
    const ids = [client.track(41, 'B08XXXX', 'view'), client.track(41, 'B08XXXX', 'click')];
    const result = await client.flush();
    assert.equal(result.accepted, 0);
    assert.equal(result.rejected.length, 2);
    assert.deepEqual(rejected.map((e) => e.event_id), ids);
    assert.equal(client.queueSize, 0);
    await client.close();
  });

  describe('page hidden, with a key', () => {
    let browser: FakeBrowser;
    beforeEach(() => {
      browser = installFakeBrowser();
    });
    afterEach(() => {
      browser.restore();
    });

    it('sends with fetch keepalive and the key, since a beacon cannot carry headers', async () => {
      const { fetch, calls } = recordingFetch();
      const client = new EventClient({ baseUrl: service().baseUrl, apiKey: KEY, fetch, flushIntervalMs: 60_000 });
      const ids = Array.from({ length: 4 }, () => client.track(42, 'B0TS000001', 'view'));

      browser.document.hide();

      assert.equal(browser.beacons.length, 0, 'no sendBeacon');
      assert.equal(calls.length, 1);
      assert.equal(calls[0]!.url, `${service().baseUrl}/api/events`);
      assert.equal(calls[0]!.init?.keepalive, true);
      assert.equal((calls[0]!.init?.headers as Record<string, string>)['X-API-Key'], KEY);
      assert.equal(client.queueSize, 0);
      const stored = await waitForStored(service(), ids);
      assert.ok([...stored.values()].every((count) => count === 1));
      await client.close();
    });
  });
});

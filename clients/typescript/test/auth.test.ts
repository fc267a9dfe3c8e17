import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { EventClient, EventRejectedError, type QueuedEvent } from '../dist/index.js';
import { installFakeBrowser, type FakeBrowser } from './browser.ts';
import { recordingFetch, useService, waitForStored } from './service.ts';

const KEY = 'ts-client-test-key';
const SERVER_KEY = 'ts-client-test-server-key';
const service = useService({ API_KEYS: KEY, SERVER_KEYS: SERVER_KEY });

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

  it('identify with the write key merges the visitor but answers no context; a server key gets it', async () => {
    const storage = new Map<string, string>();
    const store = { getItem: (k: string) => storage.get(k) ?? null, setItem: (k: string, v: string) => void storage.set(k, v), removeItem: (k: string) => void storage.delete(k) };
    const page = new EventClient({ baseUrl: service().baseUrl, apiKey: KEY, storage: store, flushOnPageHide: false });
    await page.logEvent(undefined, 'B0TS000001', 'view');
    const answer = await page.identify(43);
    assert.deepEqual(answer, { user_id: 43, anonymous_id: page.anonymousId });

    const server = new EventClient({ baseUrl: service().baseUrl, apiKey: SERVER_KEY, flushOnPageHide: false });
    await server.logEvent(undefined, 'B0TS000002', 'view');
    const merged = await server.identify(43);
    assert.deepEqual(merged.context?.recent_items, ['B0TS000002', 'B0TS000001']);
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

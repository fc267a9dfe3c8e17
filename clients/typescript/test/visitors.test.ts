import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventClient, type IdStorage } from '../dist/index.js';
import { recordingFetch, sentJson, useService, waitFor } from './service.ts';

const service = useService();

/** A `localStorage` stand-in: what a page keeps between loads. */
function memoryStorage(): IdStorage & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

describe('visitors', () => {
  it('logs a visitor under a kept anonymous id, then identify merges and attributes, and reset starts anew', async () => {
    const storage = memoryStorage();
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, storage, flushOnPageHide: false });

    await client.logEvent(null, 'B0TS000003', 'view');
    client.track(undefined, 'B0TS000001', 'click');
    await client.flush();
    const anonymousId = client.anonymousId;
    assert.match(anonymousId, /^[0-9a-f-]{36}$/);
    assert.equal(storage.items.get('event-ingest.anonymous_id'), anonymousId);
    assert.equal(sentJson(calls[0]!.init).anonymous_id, anonymousId);
    assert.equal(sentJson(calls[0]!.init).user_id, undefined);
    assert.equal(sentJson(calls[1]!.init).events[0].anonymous_id, anonymousId);
    // The next page load finds the same visitor.
    assert.equal(new EventClient({ baseUrl: service().baseUrl, storage, flushOnPageHide: false }).anonymousId, anonymousId);

    const answer = await client.identify(77);
    assert.equal(answer.user_id, 77);
    assert.equal(answer.anonymous_id, anonymousId);
    assert.deepEqual(answer.context?.recent_items, ['B0TS000001', 'B0TS000003']);
    assert.equal(client.userId, 77);

    await client.logEvent(undefined, 'B0TS000002', 'purchase');
    assert.equal(sentJson(calls.at(-1)!.init).user_id, 77, 'after identify, events carry the user');
    const rows = await waitFor(
      async () => {
        const text = await service().psql(`SELECT count(*) FILTER (WHERE user_id = 77), count(*) FILTER (WHERE anonymous_id = '${anonymousId}') FROM interaction_logs`);
        return text === '3|2' ? text : undefined;
      },
      { what: 'the visitor\'s two events attributed to user 77, beside the user\'s own' },
    );
    assert.equal(rows, '3|2');

    client.reset();
    assert.equal(client.userId, undefined);
    assert.notEqual(client.anonymousId, anonymousId);
    await client.close();
  });

  it('keeps the anonymous id for the page when storage refuses writes', async () => {
    const broken = {
      getItem: () => null,
      setItem: () => {
        throw new Error('QuotaExceededError');
      },
      removeItem: () => undefined,
    };
    const client = new EventClient({ baseUrl: service().baseUrl, storage: broken, flushOnPageHide: false });
    const id = client.anonymousId;
    assert.equal(client.anonymousId, id);
    await client.logEvent(undefined, 'B0TS000001', 'view');
    await client.close();
  });

  it('starts a new visitor when another user is identified without a logout', async () => {
    const storage = memoryStorage();
    const client = new EventClient({ baseUrl: service().baseUrl, storage, flushOnPageHide: false });
    const first = client.anonymousId;
    await client.identify(81);
    assert.equal(client.anonymousId, first);
    const answer = await client.identify(82);
    assert.notEqual(answer.anonymous_id, first);
    assert.equal(client.userId, 82);
    await client.close();
  });

  it('does not send an identify the service refuses again', async () => {
    const { fetch, calls } = recordingFetch();
    const client = new EventClient({ baseUrl: service().baseUrl, fetch, storage: memoryStorage(), flushOnPageHide: false });
    await assert.rejects(client.identify(0), /user_id/);
    assert.equal(calls.length, 1);
    assert.equal(client.userId, undefined);
    await client.close();
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configure, EventClient, EventRejectedError, logEvent } from '../dist/index.js';
import { recordingFetch, useService, waitForStored } from './service.ts';

const service = useService();

/** The seed's client, verbatim but for its base URL. */
function seedClient(API_BASE_URL: string) {
  return async function logEvent(userId: number, asin: string, eventType: 'view' | 'click' | 'add_to_cart' | 'purchase' | 'rate', metadata?: Record<string, any>) {
    const response = await fetch(`${API_BASE_URL}/api/event`, { method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({ user_id: userId, asin, event_type: eventType, metadata }) });
    return response.json();
  };
}

describe('logEvent, the seed function', () => {
  it("works unchanged and answers with the seed's body", async () => {
    const { fetch, calls } = recordingFetch();
    configure({ baseUrl: service().baseUrl, fetch });

    const answer = await logEvent(1, 'B08XXXX', 'view', { page: 'product_detail' });

    assert.deepEqual(answer, { success: true, message: 'Event logged: view' });
    const seedAnswer = await seedClient(service().baseUrl)(1, 'B08XXXX', 'view', { page: 'product_detail' });
    assert.deepEqual(answer, seedAnswer);

    assert.equal(calls.length, 1);
    assert.equal(calls[0]!.url, `${service().baseUrl}/api/event`);
    const sent = JSON.parse(String(calls[0]!.init?.body));
    assert.match(sent.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const stored = await waitForStored(service(), [sent.event_id]);
    assert.equal(stored.get(sent.event_id), 1);
    const row = await service().psql(
      `SELECT user_id, asin, event_type, metadata->>'page' FROM interaction_logs WHERE event_id = '${sent.event_id}'`,
    );
    assert.equal(row, '1|B08XXXX|view|product_detail');
  });

  it('answers every event type', async () => {
    configure({ baseUrl: service().baseUrl });
    for (const type of ['view', 'click', 'add_to_cart', 'purchase', 'rate'] as const) {
      assert.deepEqual(await logEvent(2, 'B0TS000001', type), { success: true, message: `Event logged: ${type}` });
    }
  });

  it('throws EventRejectedError with code and field on a 422, and does not retry it', async () => {
    const { fetch, calls } = recordingFetch();
    configure({ baseUrl: service().baseUrl, fetch });

    await assert.rejects(logEvent(0, 'B08XXXX', 'view'), (error: unknown) => {
      assert.ok(error instanceof EventRejectedError);
      assert.equal(error.name, 'EventRejectedError');
      assert.equal(error.status, 422);
      assert.equal(error.code, 'invalid_field');
      assert.equal(error.field, 'user_id');
      assert.match(error.message, /user_id/);
      assert.equal(error.body?.success, false);
      return true;
    });
    assert.equal(calls.length, 1);

    await assert.rejects(logEvent(1, 'B08XXXX', 'like' as 'view'), (error: unknown) => {
      assert.ok(error instanceof EventRejectedError);
      assert.equal(error.code, 'invalid_field');
      assert.equal(error.field, 'event_type');
      return true;
    });
    await assert.rejects(logEvent(1, 'has space', 'view'), { name: 'EventRejectedError', field: 'asin' });
  });

  it('a 413 body is rejected for good', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl });
    const huge = { blob: 'x'.repeat(70_000) };
    await assert.rejects(client.logEvent(1, 'B08XXXX', 'view', huge), { name: 'EventRejectedError', status: 413 });
  });
});

describe('EventClient', () => {
  it('sends the same event_id twice and the event is stored once', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl });
    const event = { user_id: 3, asin: 'B0TS000002', event_type: 'click' as const, event_id: crypto.randomUUID() };
    assert.deepEqual(await client.send(event), { success: true, message: 'Event logged: click' });
    assert.deepEqual(await client.send(event), { success: true, message: 'Event logged: click' });
    const stored = await waitForStored(service(), [event.event_id]);
    assert.equal(stored.get(event.event_id), 1);
  });

  it('sendBatch answers per event', async () => {
    const client = new EventClient({ baseUrl: service().baseUrl });
    const answer = await client.sendBatch([
      { user_id: 4, asin: 'B0TS000003', event_type: 'view' },
      { user_id: 4, asin: 'B0TS000003', event_type: 'nope' as 'view' },
    ]);
    assert.equal(answer.success, true);
    assert.equal(answer.accepted, 1);
    assert.equal(answer.rejected, 1);
    const [first, second] = answer.results;
    assert.equal(first?.status, 'accepted');
    assert.equal(second?.status, 'rejected');
    if (second?.status === 'rejected') assert.equal(second.error.field, 'event_type');
    if (first?.status === 'accepted') await waitForStored(service(), [first.event_id]);
  });
});

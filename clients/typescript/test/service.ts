/**
 * The real service for the tests: `event-ingest serve` on a free port, with a database, a journal
 * directory and a Redis key prefix of its own, all removed afterwards.
 */
import { gunzipSync } from 'node:zlib';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = process.env.EVENT_INGEST_BIN ?? resolve(PACKAGE_DIR, '../../target/debug/event-ingest');
const PG = process.env.EI_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432';

/** Catalogue items the tests use, with a category and brand each. */
export const ITEMS = [
  { asin: 'B08XXXX', title: 'Seed item', category: 'All Electronics', brand: 'Acme' },
  { asin: 'B0TS000001', title: 'Phone', category: 'Cell Phones & Accessories', brand: 'Fone' },
  { asin: 'B0TS000002', title: 'Phone case', category: 'Cell Phones & Accessories', brand: 'Fone' },
  { asin: 'B0TS000003', title: 'A book', category: 'Books', brand: 'Press' },
] as const;

export interface Service {
  baseUrl: string;
  databaseUrl: string;
  redisPrefix: string;
  /** Runs SQL in the service's database; the rows as `psql -tA` prints them. */
  psql(sql: string): Promise<string>;
  /** Runs a redis-cli command; its output. */
  redis(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Registers `before`/`after` hooks that start a service for the test file and tear it down, and
 * returns a getter for it.
 */
export function useService(env: Record<string, string> = {}): () => Service {
  let service: Service | undefined;
  before(async () => {
    service = await startService(env);
  });
  after(async () => {
    await service?.stop();
  });
  return () => {
    if (service === undefined) throw new Error('the service is not started');
    return service;
  };
}

export async function startService(env: Record<string, string> = {}): Promise<Service> {
  if (!existsSync(BIN)) {
    throw new Error(`no service binary at ${BIN}: build it (cargo build) or set EVENT_INGEST_BIN`);
  }
  const id = randomBytes(6).toString('hex');
  const database = `ei_ts_${id}`;
  const databaseUrl = `${PG}/${database}`;
  const redisPrefix = `ts:${id}:`;
  const journal = mkdtempSync(join(tmpdir(), 'ei-ts-journal-'));

  let child: ChildProcess | undefined;
  let baseUrl = '';
  let log = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  const cleanup = async (): Promise<void> => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((done) => child!.once('exit', () => done()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child?.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    process.off('exit', killOnExit);
    await run('psql', ['-X', '-q', `${PG}/postgres`, '-c', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`]).catch(
      (error) => console.error(`dropping ${database}:`, error),
    );
    await deleteRedisKeys(redisPrefix).catch((error) => console.error('deleting redis keys:', error));
    rmSync(journal, { recursive: true, force: true });
  };

  // A free port can be taken by someone else before the service binds it: try a few.
  for (let attempt = 0; attempt < 3 && baseUrl === ''; attempt++) {
    const port = await freePort();
    log = '';
    child = spawn(BIN, ['serve'], {
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        HOST: '127.0.0.1',
        PORT: String(port),
        JOURNAL_DIR: journal,
        REDIS_KEY_PREFIX: redisPrefix,
        BATCH_INTERVAL_MS: '20',
        // A debug build on a busy machine can miss the default 50 ms; the context is best-effort
        // by design, but these tests read it.
        REDIS_TIMEOUT_MS: '1000',
        RUST_LOG: 'warn',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const url = `http://127.0.0.1:${port}`;
    const up = await waitFor(
      async () => {
        if (child!.exitCode !== null) return 'exited';
        const live = await fetch(`${url}/health/live`).then((r) => r.ok, () => false);
        return live ? 'live' : undefined;
      },
      { timeoutMs: 30_000, what: 'the service to answer /health/live' },
    ).catch(() => 'timeout');
    if (up === 'live') baseUrl = url;
    else if (up === 'timeout') child.kill('SIGKILL');
  }
  if (baseUrl === '') {
    await cleanup();
    throw new Error(`the service did not start:\n${log}`);
  }

  const psql = async (sql: string): Promise<string> => {
    const { stdout } = await run('psql', ['-X', '-q', '-tA', '-v', 'ON_ERROR_STOP=1', databaseUrl, '-c', sql]);
    return stdout.trim();
  };
  const values = ITEMS.map(
    (item) =>
      `('${item.asin}', '${item.title}', '${item.category}', '${JSON.stringify({ brand: item.brand })}'::jsonb)`,
  ).join(', ');
  await psql(
    `INSERT INTO items (asin) SELECT asin FROM (VALUES ${ITEMS.map((i) => `('${i.asin}')`).join(', ')}) v(asin) ON CONFLICT DO NOTHING;
     INSERT INTO products (asin, title, main_category, raw_metadata) VALUES ${values} ON CONFLICT DO NOTHING;`,
  );

  return {
    baseUrl,
    databaseUrl,
    redisPrefix,
    psql,
    redis: async (...args: string[]) => (await run('redis-cli', args)).stdout.trim(),
    stop: cleanup,
  };
}

async function deleteRedisKeys(prefix: string): Promise<void> {
  const { stdout } = await run('redis-cli', ['--scan', '--pattern', `${prefix}*`]);
  const keys = stdout.split('\n').filter((key) => key !== '');
  for (let i = 0; i < keys.length; i += 500) {
    await run('redis-cli', ['del', ...keys.slice(i, i + 500)]);
  }
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/**
 * Polls `check` until it returns something other than `undefined` or `false`, every `intervalMs`;
 * fails with `what` past the deadline.
 */
export async function waitFor<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 25, what = 'a condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((done) => setTimeout(done, intervalMs));
  }
}

/** Polls PostgreSQL until the events with these ids are stored; returns how many rows each has. */
export async function waitForStored(service: Service, eventIds: string[], timeoutMs = 10_000): Promise<Map<string, number>> {
  const list = `ARRAY[${eventIds.map((id) => `'${id}'`).join(',')}]::uuid[]`;
  const sql = `SELECT event_id, count(*) FROM interaction_logs WHERE event_id = ANY(${list}) GROUP BY event_id`;
  return waitFor(
    async () => {
      const rows = (await service.psql(sql)).split('\n').filter((line) => line !== '');
      if (rows.length < eventIds.length) return undefined;
      return new Map(rows.map((line) => {
        const [id, count] = line.split('|');
        return [id!, Number(count)] as const;
      }));
    },
    { timeoutMs, what: `${eventIds.length} event(s) in interaction_logs` },
  );
}

/** A `fetch` that records every request (URL, init, time) before passing it on. */
/** The JSON a recorded request sent: its body as text, or gzip-compressed bytes inflated. */
export function sentJson(init: RequestInit | undefined): any {
  const body = init?.body;
  return JSON.parse(body instanceof Uint8Array ? gunzipSync(body).toString() : String(body));
}

export function recordingFetch(): { fetch: typeof fetch; calls: { url: string; init: RequestInit | undefined; at: number }[] } {
  const calls: { url: string; init: RequestInit | undefined; at: number }[] = [];
  return {
    calls,
    fetch: (input, init) => {
      calls.push({ url: String(input), init, at: Date.now() });
      return fetch(input, init);
    },
  };
}

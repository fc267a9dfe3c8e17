/**
 * A tiny HTTP proxy in front of the real service that misbehaves on cue: it answers 503 or 429
 * with `Retry-After`, drops the connection, or forwards the request and then drops the connection
 * (the service took the event, the client never hears so), and records every request it gets.
 */
import { gunzipSync } from 'node:zlib';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export type Fault =
  | 'forward'
  | 'drop'
  | 'forward-then-drop'
  | { status: number; retryAfter?: string; code?: string };

export interface Seen {
  at: number;
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  fault: Fault;
}

export class FaultProxy {
  /** Faults for the next requests, one each, in order; when empty, requests are forwarded. */
  readonly plan: Fault[] = [];
  readonly seen: Seen[] = [];
  private server: Server | undefined;
  private readonly target: URL;

  constructor(target: string) {
    this.target = new URL(target);
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
    });
    await new Promise<void>((done) => this.server!.listen(0, '127.0.0.1', done));
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return `http://127.0.0.1:${address.port}`;
  }

  async close(): Promise<void> {
    if (this.server === undefined) return;
    this.server.closeAllConnections();
    await new Promise<void>((done) => this.server!.close(() => done()));
  }

  /** The requests seen on one path. */
  on(path: string): Seen[] {
    return this.seen.filter((s) => s.path === path);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const fault = this.plan.shift() ?? 'forward';
    const text = req.headers['content-encoding'] === 'gzip' ? gunzipSync(body).toString() : body.toString();
    this.seen.push({ at: Date.now(), method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: text, fault });

    if (fault === 'drop') {
      req.socket.destroy();
      return;
    }
    if (typeof fault === 'object') {
      const code = fault.code ?? (fault.status === 429 ? 'rate_limited' : 'overloaded');
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      if (fault.retryAfter !== undefined) headers['Retry-After'] = fault.retryAfter;
      res.writeHead(fault.status, headers);
      res.end(JSON.stringify({ success: false, error: { code, message: `injected ${fault.status}` } }));
      return;
    }
    const answer = await this.forward(req, body);
    if (fault === 'forward-then-drop') {
      req.socket.destroy();
      return;
    }
    res.writeHead(answer.status, answer.headers);
    res.end(answer.body);
  }

  private forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
    return new Promise((done, fail) => {
      const upstream = request(
        {
          host: this.target.hostname,
          port: this.target.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: this.target.host, 'content-length': String(body.length) },
        },
        async (answer) => {
          const parts: Buffer[] = [];
          for await (const part of answer) parts.push(part as Buffer);
          const headers = { ...answer.headers };
          delete headers['transfer-encoding'];
          delete headers['connection'];
          done({ status: answer.statusCode ?? 502, headers, body: Buffer.concat(parts) });
        },
      );
      upstream.on('error', fail);
      upstream.end(body);
    });
  }
}

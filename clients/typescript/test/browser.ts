/**
 * Just enough of a browser for the page-hide path: `document` with `visibilityState` and events,
 * `window` with `pagehide`, and a `navigator.sendBeacon` that records each beacon and, when it
 * accepts one, posts it to the service as a browser would (a Blob body: its type is the Content-Type).
 */

export class FakeDocument extends EventTarget {
  visibilityState: 'visible' | 'hidden' = 'visible';

  hide(): void {
    this.visibilityState = 'hidden';
    this.dispatchEvent(new Event('visibilitychange'));
  }

  show(): void {
    this.visibilityState = 'visible';
    this.dispatchEvent(new Event('visibilitychange'));
  }
}

export interface Beacon {
  url: string;
  data: unknown;
  accepted: boolean;
}

export interface FakeBrowser {
  document: FakeDocument;
  window: EventTarget;
  beacons: Beacon[];
  /** The service's answers to the beacons that were accepted. */
  answers: Promise<unknown>[];
  /** What sendBeacon returns next: `false` is a browser refusing (its quota is used up). */
  accept: boolean;
  restore(): void;
}

const NAMES = ['document', 'window', 'navigator'] as const;

export function installFakeBrowser(): FakeBrowser {
  const saved = NAMES.map((name) => [name, Object.getOwnPropertyDescriptor(globalThis, name)] as const);
  const browser: FakeBrowser = {
    document: new FakeDocument(),
    window: new EventTarget(),
    beacons: [],
    answers: [],
    accept: true,
    restore() {
      for (const [name, descriptor] of saved) {
        if (descriptor === undefined) delete (globalThis as Record<string, unknown>)[name];
        else Object.defineProperty(globalThis, name, descriptor);
      }
    },
  };
  const navigator = {
    sendBeacon(url: string, data?: unknown): boolean {
      const accepted = browser.accept;
      browser.beacons.push({ url, data, accepted });
      if (accepted) {
        browser.answers.push(fetch(url, { method: 'POST', body: data as Blob }).then((r) => r.json()));
      }
      return accepted;
    },
  };
  const define = (name: string, value: unknown): void => {
    Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  };
  define('document', browser.document);
  define('window', browser.window);
  define('navigator', navigator);
  return browser;
}

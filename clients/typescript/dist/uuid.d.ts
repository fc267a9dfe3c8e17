/**
 * A random (v4) UUID for `event_id`. `crypto.randomUUID` exists only in secure contexts (HTTPS,
 * localhost); elsewhere the id is built from `crypto.getRandomValues`, which every browser has.
 */
export declare function newEventId(): string;

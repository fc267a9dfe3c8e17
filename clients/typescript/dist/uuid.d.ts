/**
 * A UUIDv7 (RFC 9562) for `event_id`: the time in milliseconds, then 74 random bits. Ids made
 * one after another sort by time, so PostgreSQL adds each to the end of the unique index on
 * `event_id` instead of to a random page of it: a random id per event, over millions of rows,
 * costs the database several times the disk writes. The randomness comes from
 * `crypto.getRandomValues`, which every browser has, secure context or not.
 */
export declare function newEventId(now?: number): string;

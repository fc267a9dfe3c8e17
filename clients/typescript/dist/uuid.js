/**
 * A UUIDv7 (RFC 9562) for `event_id`: the time in milliseconds, then 74 random bits. Ids made
 * one after another sort by time, so PostgreSQL adds each to the end of the unique index on
 * `event_id` instead of to a random page of it: a random id per event, over millions of rows,
 * costs the database several times the disk writes. The randomness comes from
 * `crypto.getRandomValues`, which every browser has, secure context or not.
 */
export function newEventId(now = Date.now()) {
    const bytes = new Uint8Array(16);
    const c = globalThis.crypto;
    if (c && typeof c.getRandomValues === 'function') {
        c.getRandomValues(bytes);
    }
    else {
        for (let i = 0; i < 16; i++)
            bytes[i] = Math.floor(Math.random() * 256);
    }
    let ms = Math.max(0, Math.floor(now));
    for (let i = 5; i >= 0; i--) {
        bytes[i] = ms % 256;
        ms = Math.floor(ms / 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

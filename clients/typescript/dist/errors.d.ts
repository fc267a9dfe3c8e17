import type { ApiErrorBody, ApiErrorDetail } from './types.js';
/**
 * The service refused the request for good: a 4xx other than 408 and 429 (invalid field, unknown
 * item, body too large, wrong API key, ...). Retrying the same request cannot help.
 */
export declare class EventRejectedError extends Error {
    readonly name = "EventRejectedError";
    /** The HTTP status: 400, 401, 403, 413, 415, 422, ... */
    readonly status: number;
    /** The service's error code, e.g. `invalid_field`, `missing_api_key`. */
    readonly code: string;
    /** The field to blame, when the service named one. */
    readonly field: string | undefined;
    /** The parsed error body, when there was one. */
    readonly body: ApiErrorBody | undefined;
    constructor(status: number, detail: ApiErrorDetail, body?: ApiErrorBody);
    /** The error as the batch endpoint reports a rejected event. */
    get detail(): ApiErrorDetail;
}
/**
 * The request could not be delivered, even after every retry: network errors, timeouts, or the
 * service answering 408, 429 or 5xx each time. Safe to try again later with the same `event_id`.
 */
export declare class EventDeliveryError extends Error {
    readonly name = "EventDeliveryError";
    /** Requests made, the first one included. */
    readonly attempts: number;
    /** The status of the last answer, when the last attempt got one. */
    readonly status: number | undefined;
    /** The service's error code of the last answer (`overloaded`, `rate_limited`, ...), if any. */
    readonly code: string | undefined;
    constructor(message: string, attempts: number, status?: number, code?: string, cause?: unknown);
}

"""The HTTP rules both clients follow, apart from their I/O: which answers to retry and how long to
wait, the request's headers, and what an answer means."""

from __future__ import annotations

import email.utils
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import httpx

from .errors import RejectedError, UnavailableError

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after the first attempt; the first backoff step and its cap, in seconds (a
    ``Retry-After`` is honoured even when longer, up to ``max_retry_after``: a longer one ends the
    retries at once)."""

    max_retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 10.0
    max_retry_after: float = 60.0


def retryable(status: int) -> bool:
    """408 (the body arrived too slowly), 429 (rate limited) and 5xx (503 overloaded, busy or
    unavailable, and a proxy's 502 and 504; not 501, which a retry cannot change): safe to send
    again with the same event id."""
    return status == 408 or status == 429 or (status >= 500 and status != 501)


def retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` in seconds: delay-seconds (``"1"``) or an HTTP date; None if absent or
    unreadable, never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def delay(attempt: int, after: Optional[float], policy: RetryPolicy) -> float:
    """The wait before retry ``attempt`` (from 0): at least ``Retry-After`` (plus up to one backoff
    step of jitter, so that clients told the same time do not come back together), else
    exponential backoff with full jitter."""
    if after is not None:
        return after + random.random() * policy.base_delay
    return random.random() * min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 30))


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): time first, so that the service's indexes take ids in order."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def now_rfc3339() -> str:
    """The client's clock, as the service reads ``timestamp`` and ``sent_at``: RFC 3339, UTC, ms."""
    millis = time.time_ns() // 1_000_000
    seconds, rest = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:03d}Z"


def headers(api_key: Optional[str]) -> dict[str, str]:
    base = {"accept": "application/json", "user-agent": "event-ingest-client-python/0.1.0"}
    if api_key:
        base["x-api-key"] = api_key
    return base


@dataclass
class Retry:
    """An answer worth sending the request again for, after ``delay`` seconds."""

    status: Optional[int]
    code: Optional[str]
    after: Optional[float]
    why: str


Outcome = Union[JsonObject, Retry]


def outcome(response: httpx.Response) -> Outcome:
    """The answer as data (2xx), a reason to retry, or a :class:`RejectedError` raised."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error: Mapping[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    if response.is_success:
        return body if isinstance(body, dict) else {}
    code = str(error.get("code", "http_error"))
    message = str(error.get("message", response.reason_phrase))
    if retryable(response.status_code):
        return Retry(
            response.status_code,
            code,
            retry_after(response.headers.get("retry-after")),
            f"{response.status_code} {code}: {message}",
        )
    field = error.get("field")
    raise RejectedError(response.status_code, code, message, field if isinstance(field, str) else None)


def unreachable(error: httpx.HTTPError) -> Retry:
    """A request that got no answer: a connection refused or cut, a timeout."""
    return Retry(None, None, None, f"{type(error).__name__}: {error}")


def exhausted(last: Retry, attempts: int) -> UnavailableError:
    return UnavailableError(
        f"the service did not take the request after {attempts} attempts: {last.why}",
        attempts,
        last.status,
        last.code,
    )

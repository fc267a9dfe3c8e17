"""Events in, context out: :class:`EventClient` and :class:`AsyncEventClient`, the same calls
with blocking and with ``async`` I/O.

Every event gets its ``event_id`` (a UUIDv7) and ``timestamp`` before the first attempt and a new
``sent_at`` at each, so that a retry (after 408, 429, 5xx or no answer at all, honouring
``Retry-After``) is stored once and counted once, in the partition of its first attempt."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Optional, TypedDict, Union

import httpx

from . import _http
from ._http import JsonObject, RetryPolicy
from .errors import UnavailableError

DEFAULT_URL = "http://127.0.0.1:8000"

EventType = Literal["view", "click", "add_to_cart", "purchase", "rate"]


class Context(TypedDict):
    """An actor's realtime context, as the re-ranker reads it."""

    recent_items: list[str]
    recent_categories: dict[str, int]
    last_active: Optional[str]
    purchased: list[str]


@dataclass(frozen=True)
class LoggedEvent:
    event_id: str
    message: str


@dataclass(frozen=True)
class Rejection:
    """An event of a batch the service refused, with the service's reason."""

    index: int
    code: str
    message: str
    field: Optional[str]


@dataclass(frozen=True)
class BatchResult:
    accepted: int
    rejected: list[Rejection] = field(default_factory=list)
    #: Each event's id, in the order given (the service's for those it took).
    event_ids: list[str] = field(default_factory=list)


def event_body(
    user_id: Optional[int],
    asin: str,
    event_type: str,
    metadata: Optional[Mapping[str, Any]] = None,
    *,
    anonymous_id: Optional[str] = None,
    event_id: Optional[str] = None,
    timestamp: Optional[str] = None,
) -> JsonObject:
    """One event as the service takes it, with its id and time settled now."""
    body: JsonObject = {
        "asin": asin,
        "event_type": event_type,
        "event_id": event_id or _http.uuid7(),
        "timestamp": timestamp or _http.now_rfc3339(),
    }
    if user_id is not None:
        body["user_id"] = user_id
    if anonymous_id is not None:
        body["anonymous_id"] = anonymous_id
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def _settled(event: Mapping[str, Any]) -> JsonObject:
    """A batch's event with its id and time settled, as :func:`event_body` settles them."""
    settled = dict(event)
    if settled.get("event_id") is None:
        settled["event_id"] = _http.uuid7()
    if settled.get("timestamp") is None:
        settled["timestamp"] = _http.now_rfc3339()
    return settled


def _logged(body: JsonObject, answer: JsonObject) -> LoggedEvent:
    return LoggedEvent(str(body["event_id"]), str(answer.get("message", "")))


def _batch_result(answer: JsonObject, events: list[JsonObject]) -> BatchResult:
    rejected = []
    for result in answer.get("results", []):
        if result.get("status") == "rejected":
            error = result.get("error", {})
            rejected.append(
                Rejection(
                    int(result["index"]),
                    str(error.get("code", "")),
                    str(error.get("message", "")),
                    error.get("field"),
                )
            )
    return BatchResult(
        int(answer.get("accepted", 0)), rejected, [str(e["event_id"]) for e in events]
    )


def _context_path(user_id: Optional[int], anonymous_id: Optional[str]) -> str:
    if (user_id is None) == (anonymous_id is None):
        raise ValueError("name exactly one of user_id and anonymous_id")
    if user_id is not None:
        return f"/api/users/{int(user_id)}/context"
    return f"/api/visitors/{urllib.parse.quote(str(anonymous_id), safe='')}/context"


def _context(answer: JsonObject) -> Context:
    return Context(
        recent_items=list(answer.get("recent_items", [])),
        recent_categories=dict(answer.get("recent_categories", {})),
        last_active=answer.get("last_active"),
        purchased=list(answer.get("purchased", [])),
    )


def _rerank_body(items: list[JsonObject], user_id: Optional[int], anonymous_id: Optional[str]) -> JsonObject:
    body: JsonObject = {"items": items}
    if user_id is not None:
        body["user_id"] = user_id
    if anonymous_id is not None:
        body["anonymous_id"] = anonymous_id
    return body


Body = Union[JsonObject, None]


class EventClient:
    """The service's API with blocking I/O. ``api_key``: a write key may log and identify; reading
    contexts and re-ranking take a server key (or a service without keys)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.Client(
            base_url=base_url,
            headers=_http.headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: Body = None, *, stamp: bool = False) -> JsonObject:
        attempts = self.retry.max_retries + 1
        last: Optional[_http.Retry] = None
        for attempt in range(attempts):
            if body is not None and stamp:
                body["sent_at"] = _http.now_rfc3339()
            try:
                result = _http.outcome(self._http.request(method, path, json=body))
            except httpx.HTTPError as error:
                result = _http.unreachable(error)
            if not isinstance(result, _http.Retry):
                return result
            last = result
            if result.after is not None and result.after > self.retry.max_retry_after:
                raise _http.exhausted(last, attempt + 1)
            if attempt + 1 < attempts:
                time.sleep(_http.delay(attempt, result.after, self.retry))
        assert last is not None
        raise _http.exhausted(last, attempts)

    def log_event(
        self,
        user_id: Optional[int],
        asin: str,
        event_type: EventType,
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        anonymous_id: Optional[str] = None,
        event_id: Optional[str] = None,
        timestamp: Optional[str] = None,
    ) -> LoggedEvent:
        """``POST /api/event``: the seed's ``logEvent``; a visitor's with ``user_id=None`` and
        ``anonymous_id``. Returns once the event is durable. To send an event again after an
        :class:`UnavailableError`, pass its ``event_id`` and ``timestamp`` (the error's) back."""
        body = event_body(
            user_id, asin, event_type, metadata, anonymous_id=anonymous_id, event_id=event_id, timestamp=timestamp
        )
        try:
            return _logged(body, self._send("POST", "/api/event", body, stamp=True))
        except UnavailableError as error:
            error.events = [body]
            raise

    def log_events(self, events: Iterable[Mapping[str, Any]]) -> BatchResult:
        """``POST /api/events``: up to 500 events (dicts as ``/api/event`` takes them), each
        accepted or rejected on its own."""
        settled = [_settled(event) for event in events]
        try:
            answer = self._send("POST", "/api/events", {"events": settled}, stamp=True)
        except UnavailableError as error:
            error.events = settled
            raise
        return _batch_result(answer, settled)

    def identify(self, anonymous_id: str, user_id: int) -> JsonObject:
        """``POST /api/identify``: the visitor becomes the user (their context merged into the
        user's at once, their stored events attributed in the background)."""
        return self._send("POST", "/api/identify", {"anonymous_id": anonymous_id, "user_id": user_id})

    def get_context(self, user_id: Optional[int] = None, *, anonymous_id: Optional[str] = None) -> Context:
        """A user's or a visitor's realtime context."""
        return _context(self._send("GET", _context_path(user_id, anonymous_id)))

    def get_recent_items(self, user_id: int) -> list[str]:
        """The user's recent items, newest first (the seed's ``get_recent_items``)."""
        return self.get_context(user_id)["recent_items"]

    def get_recent_categories(self, user_id: int) -> dict[str, int]:
        """The user's recent categories and their counts (the seed's ``get_recent_categories``)."""
        return self.get_context(user_id)["recent_categories"]

    def rerank(self, items: list[JsonObject], *, user_id: Optional[int] = None, anonymous_id: Optional[str] = None) -> JsonObject:
        """``POST /api/rerank`` as it answers; see :class:`ReRankingService` for the seed's call."""
        return self._send("POST", "/api/rerank", _rerank_body(items, user_id, anonymous_id))


class AsyncEventClient:
    """:class:`EventClient`'s calls, ``async``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: Optional[str] = None,
        timeout: float = 5.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_http.headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncEventClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, body: Body = None, *, stamp: bool = False) -> JsonObject:
        attempts = self.retry.max_retries + 1
        last: Optional[_http.Retry] = None
        for attempt in range(attempts):
            if body is not None and stamp:
                body["sent_at"] = _http.now_rfc3339()
            try:
                result = _http.outcome(await self._http.request(method, path, json=body))
            except httpx.HTTPError as error:
                result = _http.unreachable(error)
            if not isinstance(result, _http.Retry):
                return result
            last = result
            if result.after is not None and result.after > self.retry.max_retry_after:
                raise _http.exhausted(last, attempt + 1)
            if attempt + 1 < attempts:
                await asyncio.sleep(_http.delay(attempt, result.after, self.retry))
        assert last is not None
        raise _http.exhausted(last, attempts)

    async def log_event(
        self,
        user_id: Optional[int],
        asin: str,
        event_type: EventType,
        metadata: Optional[Mapping[str, Any]] = None,
        *,
        anonymous_id: Optional[str] = None,
        event_id: Optional[str] = None,
        timestamp: Optional[str] = None,
    ) -> LoggedEvent:
        body = event_body(
            user_id, asin, event_type, metadata, anonymous_id=anonymous_id, event_id=event_id, timestamp=timestamp
        )
        try:
            return _logged(body, await self._send("POST", "/api/event", body, stamp=True))
        except UnavailableError as error:
            error.events = [body]
            raise

    async def log_events(self, events: Iterable[Mapping[str, Any]]) -> BatchResult:
        settled = [_settled(event) for event in events]
        try:
            answer = await self._send("POST", "/api/events", {"events": settled}, stamp=True)
        except UnavailableError as error:
            error.events = settled
            raise
        return _batch_result(answer, settled)

    async def identify(self, anonymous_id: str, user_id: int) -> JsonObject:
        return await self._send("POST", "/api/identify", {"anonymous_id": anonymous_id, "user_id": user_id})

    async def get_context(self, user_id: Optional[int] = None, *, anonymous_id: Optional[str] = None) -> Context:
        return _context(await self._send("GET", _context_path(user_id, anonymous_id)))

    async def get_recent_items(self, user_id: int) -> list[str]:
        return (await self.get_context(user_id))["recent_items"]

    async def get_recent_categories(self, user_id: int) -> dict[str, int]:
        return (await self.get_context(user_id))["recent_categories"]

    async def rerank(self, items: list[JsonObject], *, user_id: Optional[int] = None, anonymous_id: Optional[str] = None) -> JsonObject:
        return await self._send("POST", "/api/rerank", _rerank_body(items, user_id, anonymous_id))

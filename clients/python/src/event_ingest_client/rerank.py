"""The seed's re-ranking call, ``ReRankingService().rerank_items(user_id, ranked_items)``, over
``POST /api/rerank``: the recommender's list goes in as it is (``(asin, score)`` pairs, or dicts
with ``asin`` and ``score`` and whatever else), and comes back in the same shape, reordered.

It fails open, as the service does when Redis is down: if the service cannot be reached or
answers 5xx, the input comes back in its order with ``available`` false and the reason, and a
warning is logged. A refusal (4xx: a write key where a server key is needed, an item the service
refuses) is a bug to fix, raised as :class:`~event_ingest_client.errors.RejectedError`."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

from ._http import JsonObject, RetryPolicy
from .client import DEFAULT_URL, AsyncEventClient, EventClient
from .errors import UnavailableError

logger = logging.getLogger("event_ingest_client")

#: An item of a recommender's list: ``(asin, score)``, or a dict with ``asin`` and ``score``.
Item = TypeVar("Item", tuple[str, float], Mapping[str, Any])

#: Each attempt of a re-ranking waits this long at most (each of connecting, sending and
#: reading), and it is tried twice; a 503 whose ``Retry-After`` is longer than 0.2 s is not
#: waited for: a recommender must answer.
RERANK_TIMEOUT = 1.0
RERANK_RETRY = RetryPolicy(max_retries=1, base_delay=0.05, max_delay=0.2, max_retry_after=0.2)


class Reranked(list[Item]):
    """The items in their new order, in the shape they came in (a ``list``), and what the
    re-ranking used: ``available`` (false: the input order, for ``unavailable_reason``:
    ``no_recent_activity``, ``redis_unavailable``, or ``service_unavailable`` when the service
    itself could not answer), the items a rule ``removed``, and the service's ``details`` per
    item (new and original score, original rank, the rules' reasons)."""

    available: bool
    unavailable_reason: Optional[str]
    removed: list[Item]
    details: list[JsonObject]


def _request_items(ranked_items: Sequence[Item]) -> list[JsonObject]:
    items = []
    for item in ranked_items:
        if isinstance(item, tuple):
            asin, score = item
        else:
            asin, score = item["asin"], item["score"]
        items.append({"asin": str(asin), "score": float(score)})
    return items


def _reshaped(item: Item, score: float) -> Item:
    if isinstance(item, tuple):
        return (item[0], score)
    return {**item, "score": score}


def _whole(answer: JsonObject, n: int) -> bool:
    """Whether the answer holds each of the ``n`` items once, in ``items`` or ``removed``."""
    listed: list[Any] = []
    for key in ("items", "removed"):
        part = answer.get(key, [])
        if not isinstance(part, list):
            return False
        listed.extend(part)
    ranks = [entry.get("original_rank") for entry in listed if isinstance(entry, dict)]
    return sorted(r for r in ranks if isinstance(r, int)) == list(range(n)) and len(ranks) == n


def _reranked(ranked_items: Sequence[Item], answer: JsonObject) -> Reranked[Item]:
    if not _whole(answer, len(ranked_items)):
        return _unchanged(ranked_items, "invalid_answer", "the service's answer does not hold every item once")
    result: Reranked[Item] = Reranked(
        _reshaped(ranked_items[int(d["original_rank"])], float(d["score"]))
        for d in answer.get("items", [])
    )
    context = answer.get("context", {})
    result.available = bool(context.get("available", False))
    result.unavailable_reason = context.get("unavailable_reason")
    result.removed = [ranked_items[int(r["original_rank"])] for r in answer.get("removed", [])]
    result.details = list(answer.get("items", []))
    return result


def _unchanged(ranked_items: Sequence[Item], reason: str, why: object) -> Reranked[Item]:
    logger.warning("re-ranking unavailable (%s), the input order stands: %s", reason, why)
    result: Reranked[Item] = Reranked(ranked_items)
    result.available = False
    result.unavailable_reason = reason
    result.removed = []
    result.details = []
    return result


Actor = Union[int, str]

#: The answer for nothing to re-rank, given without asking the service.
NOTHING: JsonObject = {"items": [], "removed": [], "context": {"available": False, "unavailable_reason": "no_items"}}


def _actor(user_id: Optional[Actor], anonymous_id: Optional[str]) -> dict[str, Any]:
    """``rerank_items(42, ...)`` for a user; ``rerank_items(None, ..., anonymous_id=...)`` for a
    visitor."""
    if anonymous_id is not None:
        return {"anonymous_id": anonymous_id}
    return {"user_id": int(user_id) if user_id is not None else None}


class ReRankingService:
    """``ReRankingService(base_url, api_key=SERVER_KEY).rerank_items(user_id, ranked_items)``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: Optional[str] = None,
        timeout: float = RERANK_TIMEOUT,
        retry: RetryPolicy = RERANK_RETRY,
        client: Optional[EventClient] = None,
    ) -> None:
        self._client = client or EventClient(base_url, api_key=api_key, timeout=timeout, retry=retry)

    def rerank_items(
        self,
        user_id: Optional[Actor],
        ranked_items: Sequence[Item],
        *,
        anonymous_id: Optional[str] = None,
    ) -> Reranked[Item]:
        if not ranked_items:
            return _reranked(ranked_items, NOTHING)
        try:
            answer = self._client.rerank(_request_items(ranked_items), **_actor(user_id, anonymous_id))
        except UnavailableError as error:
            return _unchanged(ranked_items, "service_unavailable", error)
        return _reranked(ranked_items, answer)

    def close(self) -> None:
        self._client.close()


class AsyncReRankingService:
    """:class:`ReRankingService`, ``async``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: Optional[str] = None,
        timeout: float = RERANK_TIMEOUT,
        retry: RetryPolicy = RERANK_RETRY,
        client: Optional[AsyncEventClient] = None,
    ) -> None:
        self._client = client or AsyncEventClient(base_url, api_key=api_key, timeout=timeout, retry=retry)

    async def rerank_items(
        self,
        user_id: Optional[Actor],
        ranked_items: Sequence[Item],
        *,
        anonymous_id: Optional[str] = None,
    ) -> Reranked[Item]:
        if not ranked_items:
            return _reranked(ranked_items, NOTHING)
        try:
            answer = await self._client.rerank(_request_items(ranked_items), **_actor(user_id, anonymous_id))
        except UnavailableError as error:
            return _unchanged(ranked_items, "service_unavailable", error)
        return _reranked(ranked_items, answer)

    async def aclose(self) -> None:
        await self._client.aclose()

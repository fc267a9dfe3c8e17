"""``ReRankingService().rerank_items(user_id, ranked_items)``: the recommender's shapes in and
out, the context's effect, failing open as the service does, and the key it takes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from event_ingest_client import (
    AsyncReRankingService,
    EventClient,
    RejectedError,
    ReRankingService,
)

from .conftest import ITEMS, Service, free_port

#: The recommender's ranking: a book first, the toys and the garden item after.
RANKED = [(ITEMS[0][0], 0.9), (ITEMS[3][0], 0.85), (ITEMS[2][0], 0.8), (ITEMS[4][0], 0.75)]


def browse_toys(service: Service, user_id: int) -> None:
    with EventClient(service.base_url) as client:
        client.log_event(user_id, ITEMS[2][0], "view")
        client.log_event(user_id, ITEMS[2][0], "add_to_cart")


def test_pairs_come_back_as_pairs_reordered_by_the_context(service: Service, user_id: int) -> None:
    browse_toys(service, user_id)
    reranker = ReRankingService(service.base_url)
    reranked = reranker.rerank_items(user_id, RANKED)
    reranker.close()
    assert reranked.available
    # The toy not seen yet rises (+0.3 for the category); the one in the cart falls (-0.5 + 0.3).
    assert [asin for asin, _ in reranked] == [ITEMS[4][0], ITEMS[0][0], ITEMS[3][0], ITEMS[2][0]]
    asin, score = reranked[0]
    assert (asin, round(score, 9)) == (ITEMS[4][0], 1.05)
    rules = {r["rule"] for r in reranked.details[0]["reasons"]}
    assert rules == {"intent_boost"}


def test_dicts_keep_their_own_keys(service: Service, user_id: int) -> None:
    browse_toys(service, user_id)
    ranked = [{"asin": asin, "score": score, "title": f"item {i}"} for i, (asin, score) in enumerate(RANKED)]
    reranked = ReRankingService(service.base_url).rerank_items(user_id, ranked)
    assert reranked[0] == {"asin": ITEMS[4][0], "score": pytest.approx(1.05), "title": "item 3"}
    assert {item["title"] for item in reranked} == {"item 0", "item 1", "item 2", "item 3"}


def test_without_a_context_the_input_comes_back_as_the_service_says(service: Service, user_id: int) -> None:
    reranked = ReRankingService(service.base_url).rerank_items(user_id, RANKED)
    assert list(reranked) == RANKED
    assert (reranked.available, reranked.unavailable_reason) == (False, "no_recent_activity")


def test_it_fails_open_when_redis_is_down_or_the_service_out_of_reach(own_service: Any, user_id: int) -> None:
    without_redis: Service = own_service(REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    reranked = ReRankingService(without_redis.base_url).rerank_items(user_id, RANKED)
    assert (list(reranked), reranked.unavailable_reason) == (RANKED, "redis_unavailable")
    gone = ReRankingService(f"http://127.0.0.1:{free_port()}").rerank_items(user_id, RANKED)
    assert (list(gone), gone.available, gone.unavailable_reason) == (RANKED, False, "service_unavailable")


def test_a_write_key_may_not_rerank_and_a_server_key_may(own_service: Any, user_id: int) -> None:
    keyed: Service = own_service(API_KEYS="pk_page", SERVER_KEYS="sk_recommender")
    with pytest.raises(RejectedError) as refused:
        ReRankingService(keyed.base_url, api_key="pk_page").rerank_items(user_id, RANKED)
    assert (refused.value.status, refused.value.code) == (403, "server_key_required")
    reranked = ReRankingService(keyed.base_url, api_key="sk_recommender").rerank_items(user_id, RANKED)
    assert reranked.unavailable_reason == "no_recent_activity"


def test_the_async_service_does_the_same(service: Service, user_id: int) -> None:
    browse_toys(service, user_id)

    async def rerank() -> list[tuple[str, float]]:
        reranker = AsyncReRankingService(service.base_url)
        reranked = await reranker.rerank_items(user_id, RANKED)
        gone = await AsyncReRankingService(f"http://127.0.0.1:{free_port()}").rerank_items(user_id, RANKED)
        assert gone.unavailable_reason == "service_unavailable"
        await reranker.aclose()
        return list(reranked)

    assert [asin for asin, _ in asyncio.run(rerank())][0] == ITEMS[4][0]

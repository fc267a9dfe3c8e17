"""A recommender of a few lines, as the seed's FastAPI app is: its route takes an event and logs it,
its recommendations re-rank a ranking with ``ReRankingService().rerank_items``; driven through
FastAPI's own test client, against the real service."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from event_ingest_client import AsyncEventClient, AsyncReRankingService, EventType

from .conftest import ITEMS, Service


class EventRequest(BaseModel):
    user_id: int
    asin: str
    event_type: EventType
    metadata: dict[str, Any] | None = None


def recommender(base_url: str) -> FastAPI:
    app = FastAPI()
    events = AsyncEventClient(base_url)
    reranker = AsyncReRankingService(base_url)

    @app.post("/api/track")
    async def track(event: EventRequest) -> dict[str, str]:
        logged = await events.log_event(event.user_id, event.asin, event.event_type, event.metadata)
        return {"event_id": logged.event_id}

    @app.get("/recommendations/{user_id}")
    async def recommendations(user_id: int) -> list[dict[str, Any]]:
        ranked_items = [(asin, 1.0 - i / 10) for i, (asin, _) in enumerate(ITEMS)]
        reranked = await reranker.rerank_items(user_id, ranked_items)
        return [{"asin": asin, "score": round(score, 3)} for asin, score in reranked]

    return app


def test_a_fastapi_recommender_tracks_and_reranks_through_the_client(service: Service, user_id: int) -> None:
    with TestClient(recommender(service.base_url)) as client:
        before = client.get(f"/recommendations/{user_id}").json()
        assert [item["asin"] for item in before] == [asin for asin, _ in ITEMS]
        answer = client.post("/api/track", json={"user_id": user_id, "asin": ITEMS[3][0], "event_type": "click"})
        assert answer.status_code == 200
        after = client.get(f"/recommendations/{user_id}").json()
    # The garden item, clicked just now: its category boosted (+0.3), itself penalised (-0.5).
    assert [item["asin"] for item in after] == [ITEMS[0][0], ITEMS[1][0], ITEMS[2][0], ITEMS[4][0], ITEMS[3][0]]
    service.wait_for("the row", lambda: service.rows(f"event_id = '{answer.json()['event_id']}'") == 1)

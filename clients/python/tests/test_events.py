"""Events, identifications and contexts through the client, against the real service."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from event_ingest_client import (
    AsyncEventClient,
    EventClient,
    RedisContextService,
    RejectedError,
)

from .conftest import ITEMS, Service


def test_an_event_is_stored_once_and_its_context_read_with_the_seeds_names(service: Service, user_id: int) -> None:
    with EventClient(service.base_url) as client:
        logged = client.log_event(user_id, ITEMS[0][0], "view", {"page": "product_detail"})
        assert logged.message == "Event logged: view"
        client.log_event(user_id, ITEMS[2][0], "add_to_cart")
        context = RedisContextService(service.base_url)
        assert context.get_recent_items(user_id) == [ITEMS[2][0], ITEMS[0][0]]
        assert context.get_recent_categories(user_id) == {"Books": 1, "Toys & Games": 1}
        assert client.get_context(user_id)["last_active"] is not None
        context.close()
    service.wait_for("both rows", lambda: service.rows(f"user_id = {user_id}") == 2)
    assert service.sql(
        f"SELECT metadata->>'page' FROM interaction_logs WHERE event_id = '{logged.event_id}'"
    ) == "product_detail"


def test_a_batch_says_which_events_it_refused(service: Service, user_id: int) -> None:
    with EventClient(service.base_url) as client:
        result = client.log_events(
            [
                {"user_id": user_id, "asin": ITEMS[1][0], "event_type": "click"},
                {"user_id": user_id, "asin": ITEMS[1][0], "event_type": "like"},
                {"anonymous_id": f"v-{user_id}", "asin": ITEMS[3][0], "event_type": "view"},
            ]
        )
    assert result.accepted == 2
    assert [(r.index, r.code, r.field) for r in result.rejected] == [(1, "invalid_field", "event_type")]
    assert len(set(result.event_ids)) == 3
    service.wait_for("the two rows", lambda: service.rows(f"user_id = {user_id} OR anonymous_id = 'v-{user_id}'") == 2)


def test_a_refusal_is_a_typed_error_with_the_services_code_and_field(service: Service, user_id: int) -> None:
    with EventClient(service.base_url) as client:
        with pytest.raises(RejectedError) as refused:
            client.log_event(user_id, ITEMS[0][0], "like")  # type: ignore[arg-type]
    assert refused.value.status == 422
    assert refused.value.code == "invalid_field"
    assert refused.value.field == "event_type"


def test_a_visitor_identified_becomes_the_user(service: Service, user_id: int) -> None:
    visitor = f"v-{secrets.token_hex(8)}"
    with EventClient(service.base_url) as client:
        client.log_event(None, ITEMS[4][0], "view", anonymous_id=visitor)
        assert client.get_context(anonymous_id=visitor)["recent_items"] == [ITEMS[4][0]]
        answer = client.identify(visitor, user_id)
        assert answer["user_id"] == user_id
        assert client.get_recent_items(user_id) == [ITEMS[4][0]]
        assert client.get_context(anonymous_id=visitor)["recent_items"] == []
    service.wait_for(
        "the visitor's row attributed",
        lambda: service.rows(f"anonymous_id = '{visitor}' AND user_id = {user_id}") == 1,
    )


def test_the_async_client_does_the_same(service: Service, user_id: int) -> None:
    async def scenario() -> None:
        async with AsyncEventClient(service.base_url) as client:
            await client.log_event(user_id, ITEMS[0][0], "purchase")
            result = await client.log_events([{"user_id": user_id, "asin": ITEMS[1][0], "event_type": "view"}])
            assert result.accepted == 1
            assert await client.get_recent_items(user_id) == [ITEMS[1][0], ITEMS[0][0]]
            assert await client.get_recent_categories(user_id) == {"Books": 2}
            context = await client.get_context(user_id)
            assert context["purchased"] == [ITEMS[0][0]]
            with pytest.raises(RejectedError):
                await client.identify("not a valid id!", user_id)

    asyncio.run(scenario())
    service.wait_for("both rows", lambda: service.rows(f"user_id = {user_id}") == 2)

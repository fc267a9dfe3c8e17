"""The client's HTTP rules: 503 and 429 retried after ``Retry-After`` with the same ``event_id``
(stored once), an unreachable service reported after the retries, a refusal never retried."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest

from event_ingest_client import (
    AsyncEventClient,
    EventClient,
    ReRankingService,
    RetryPolicy,
    UnavailableError,
)
from event_ingest_client._http import retry_after

from .conftest import ITEMS, Service, free_port


class Refusing:
    """An HTTP proxy in front of the service that answers the first ``refusals`` requests 503 with
    ``Retry-After: 1``, as the service does when its journal is full, and passes the rest on;
    it keeps every body it was sent."""

    def __init__(self, target: str, refusals: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refusals = refusals
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                proxy.bodies.append(json.loads(body))
                if proxy.refusals > 0:
                    proxy.refusals -= 1
                    answer = b'{"success":false,"error":{"code":"overloaded","message":"full"}}'
                    self.send_response(503)
                    self.send_header("retry-after", "1")
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                forwarded = httpx.post(
                    target + self.path, content=body, headers={"content-type": "application/json"}
                )
                self.send_response(forwarded.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(forwarded.content)))
                self.end_headers()
                self.wfile.write(forwarded.content)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def refusing(service: Service) -> Iterator[Refusing]:
    proxy = Refusing(service.base_url, refusals=2)
    yield proxy
    proxy.close()


def test_a_503_is_retried_after_its_retry_after_with_the_same_event_id(
    service: Service, refusing: Refusing, user_id: int
) -> None:
    started = time.monotonic()
    with EventClient(refusing.url) as client:
        logged = client.log_event(user_id, ITEMS[0][0], "view")
    assert time.monotonic() - started >= 2.0, "two Retry-After: 1 honoured"
    assert [b["event_id"] for b in refusing.bodies] == [logged.event_id] * 3
    assert len({b["sent_at"] for b in refusing.bodies}) == 3, "sent_at is each attempt's"
    assert len({b["timestamp"] for b in refusing.bodies}) == 1, "timestamp is the event's"
    service.wait_for("the row", lambda: service.rows(f"event_id = '{logged.event_id}'") == 1)


def test_the_async_client_retries_a_batch_alike(service: Service, refusing: Refusing, user_id: int) -> None:
    async def send() -> list[str]:
        async with AsyncEventClient(refusing.url) as client:
            result = await client.log_events(
                [{"user_id": user_id, "asin": asin, "event_type": "click"} for asin, _ in ITEMS[:3]]
            )
            return result.event_ids

    ids = asyncio.run(send())
    assert [e["event_id"] for b in refusing.bodies for e in b["events"]] == ids * 3
    service.wait_for("three rows", lambda: service.rows(f"user_id = {user_id}") == 3)


def test_a_429_of_the_service_is_waited_out(own_service: Any, user_id: int) -> None:
    limited: Service = own_service(RATE_LIMIT_PER_IP="1", RATE_LIMIT_BURST="1")
    with EventClient(limited.base_url) as client:
        first = client.log_event(user_id, ITEMS[0][0], "view")
        second = client.log_event(user_id, ITEMS[1][0], "view")
    assert first.event_id != second.event_id
    limited.wait_for("both rows", lambda: limited.rows() == 2)


def test_a_service_out_of_reach_is_reported_after_the_retries() -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)
    with EventClient(f"http://127.0.0.1:{free_port()}", retry=policy, timeout=1) as client:
        with pytest.raises(UnavailableError) as unavailable:
            client.log_event(1, ITEMS[0][0], "view")
    assert unavailable.value.attempts == 3
    assert unavailable.value.status is None
    (event,) = unavailable.value.events
    assert event["asin"] == ITEMS[0][0] and event["event_id"] and event["timestamp"], "to send again"


def test_the_re_ranker_does_not_wait_out_a_long_retry_after(service: Service, refusing: Refusing) -> None:
    ranked = [(ITEMS[0][0], 0.9), (ITEMS[1][0], 0.8)]
    started = time.monotonic()
    reranked = ReRankingService(refusing.url).rerank_items(1, ranked)
    assert time.monotonic() - started < 0.9, "Retry-After: 1 is longer than a recommender waits"
    assert (list(reranked), reranked.unavailable_reason) == (ranked, "service_unavailable")


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("Wed, 21 Oct 2026 07:28:10 GMT", now=1792567680.0) == 10.0
    assert retry_after("soon") is None
    assert retry_after(None) is None

"""Segment's own SDKs against the running service: @segment/analytics-node (npm, through
node_sdk.mjs) and segment-analytics-python (PyPI, plain and gzip), each sending one shop's day as
a shop's server would: a visitor's views, click and cart, the login (identify), an order of three
products, a review, a second visitor aliased to the same user, and messages the service cannot
use (a page, an unmapped track, a track by a non-numeric user id, a view without a product).

Checked on the real stores: the rows in PostgreSQL (and none from the unusable messages), the
user's Redis context and the emptied visitors', the metrics of the messages not used. A batch
answered 503 after the service took it (a proxy between the SDK and the service) is retried by
the SDK and stored and counted once.

Run by scripts/segment-sdks, which starts the service and sets BASE_URL, DATABASE_URL, WRITE_KEY
and SERVER_KEY.
"""

import http.client
import http.server
import json
import os
import random
import subprocess
import threading
import time
import unittest
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from segment.analytics.client import Client

BASE_URL = os.environ["BASE_URL"]
DATABASE_URL = os.environ["DATABASE_URL"]
WRITE_KEY = os.environ["WRITE_KEY"]
SERVER_KEY = os.environ["SERVER_KEY"]
HERE = Path(__file__).resolve().parent


def psql(sql):
    """The rows of a query, each a list of its columns as text."""
    out = subprocess.run(
        ["psql", "-qtA", "-F", "\t", "-v", "ON_ERROR_STOP=1", DATABASE_URL, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def api(path):
    request = urllib.request.Request(BASE_URL + path, headers={"X-API-Key": SERVER_KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def metric(name, **labels):
    """The value of one series of the service's /metrics (0 if it is absent)."""
    with urllib.request.urlopen(BASE_URL + "/metrics", timeout=10) as response:
        scrape = response.read().decode()
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in scrape.splitlines():
        series, _, value = line.rpartition(" ")
        if series == wanted:
            return float(value)
    return 0.0


def eventually(what, check, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {outcome!r}")
        time.sleep(0.1)


class Catalogue:
    """Four items of the seeded catalogue that have a category, and their categories."""

    def __init__(self):
        rows = psql(
            "SELECT asin, category FROM item_catalogue WHERE category IS NOT NULL ORDER BY asin LIMIT 4"
        )
        assert len(rows) == 4, "the catalogue is not seeded"
        self.asins = [asin for asin, _ in rows]
        self.category = dict(rows)


class Scenario:
    """One shop's day, as Segment calls in the SDKs' own (camelCase) field names."""

    def __init__(self, catalogue, sdk):
        self.user = random.randint(10**12, 10**13)
        tag = uuid.uuid4().hex[:12]
        self.visitor = f"{sdk}-{tag}-visitor"
        self.second_visitor = f"{sdk}-{tag}-second"
        a, b, c, d = catalogue.asins
        visitor = {"anonymousId": self.visitor}
        user = {"userId": str(self.user), "anonymousId": self.visitor}
        order = [{"product_id": a, "price": 12.5, "quantity": 1}, {"product_id": b, "price": 30},
                 {"sku": c, "price": 4}]
        self.calls = [
            ("track", {**visitor, "event": "Product Viewed", "properties": {"product_id": a, "price": 12.5}}),
            ("track", {**visitor, "event": "Product Clicked", "properties": {"product_id": b, "position": 2}}),
            ("track", {**visitor, "event": "Product Added", "properties": {"product_id": b, "quantity": 1}}),
            ("identify", {**user, "traits": {"plan": "gold"}}),
            ("track", {**user, "event": "Order Completed",
                       "properties": {"order_id": f"order-{tag}", "total": 46.5, "currency": "EUR", "products": order}}),
            ("track", {**user, "event": "Product Reviewed",
                       "properties": {"product_id": a, "rating": "4", "review_body": "Good"}}),
            ("track", {"anonymousId": self.second_visitor, "event": "Product Viewed", "properties": {"product_id": d}}),
            ("alias", {"previousId": self.second_visitor, "userId": str(self.user)}),
            # Taken, counted, not stored.
            ("page", {**user, "name": "Home"}),
            ("track", {**user, "event": "Wishlist Shared", "properties": {"product_id": a}}),
            ("track", {"userId": f"shopper-{tag}@shop.example", "event": "Product Viewed", "properties": {"product_id": a}}),
            ("track", {**visitor, "event": "Product Viewed", "properties": {"name": "no id"}}),
        ]
        self.expected_rows = sorted([
            ("view", a), ("click", b), ("add_to_cart", b), ("purchase", a), ("purchase", b),
            ("purchase", c), ("rate", a), ("view", d),
        ])
        self.unused = {"unmapped_type": 1, "unmapped_event": 1, "non_numeric_user_id": 1, "no_item": 1}


UNUSED = ("unmapped_type", "unmapped_event", "non_numeric_user_id", "no_item")


class RetryProxy:
    """Between an SDK and the service: forwards every request and relays the answer, except the
    first batch's, which it forwards (the service takes it) and then answers 503, as a service
    would whose answer was lost; the SDK retries with the same messages."""

    def __init__(self):
        target = urllib.parse.urlsplit(BASE_URL)
        proxy = self
        self.batches = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type", "content-encoding", "user-agent")}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                upstream.request("POST", self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                status, payload = answer.status, answer.read()
                upstream.close()
                proxy.batches.append((self.path, status, body))
                if len(proxy.batches) == 1:
                    status, payload = 503, b'{"success":false,"code":"unavailable","message":"lost"}'
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def send_with_node(scenario, host):
    plan = {"host": host, "writeKey": WRITE_KEY, "calls": scenario.calls}
    subprocess.run(["node", str(HERE / "node_sdk.mjs"), json.dumps(plan)], check=True, timeout=120)


PYTHON_FIELDS = {"userId": "user_id", "anonymousId": "anonymous_id", "previousId": "previous_id"}


def send_with_python(scenario, host, gzip=False):
    failures = []
    client = Client(WRITE_KEY, host=host, gzip=gzip, max_retries=3, upload_interval=1,
                    on_error=lambda error, batch: failures.append(error))
    for method, message in scenario.calls:
        getattr(client, method)(**{PYTHON_FIELDS.get(k, k): v for k, v in message.items()})
    client.shutdown()
    assert not failures, f"segment-analytics-python reported: {failures}"


class SegmentSdks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.catalogue = Catalogue()

    def unused_counts(self):
        return {reason: metric("segment_messages_unused_total", reason=reason) for reason in UNUSED}

    def check(self, scenario, unused_before):
        """What the scenario must have left in PostgreSQL and Redis; returns the user's context."""
        rows_sql = (
            "SELECT event_type::text, asin FROM interaction_logs "
            f"WHERE user_id = {scenario.user} OR anonymous_id IN ('{scenario.visitor}', '{scenario.second_visitor}')"
        )
        stored = eventually(
            "the eight events stored and attributed to the user",
            lambda: (rows := sorted(map(tuple, psql(rows_sql)))) == scenario.expected_rows and rows,
        )
        self.assertEqual(stored, scenario.expected_rows)
        unattributed = psql(
            "SELECT count(*) FROM interaction_logs WHERE user_id IS NULL "
            f"AND anonymous_id IN ('{scenario.visitor}', '{scenario.second_visitor}')"
        )
        self.assertEqual(unattributed, [["0"]], "every visitor row belongs to the user")
        self.assertEqual(
            psql("SELECT count(*) FROM interaction_logs WHERE metadata->>'order_id' LIKE 'order-%' "
                 f"AND user_id = {scenario.user} AND event_type = 'purchase'"),
            [["3"]],
            "each purchase keeps the order's properties",
        )
        rating = psql(f"SELECT jsonb_typeof(metadata->'rating'), metadata->>'rating' FROM interaction_logs "
                      f"WHERE user_id = {scenario.user} AND event_type = 'rate'")
        self.assertEqual(rating, [["number", "4"]], "the review's rating, a number")
        self.assertEqual(
            psql(f"SELECT anonymous_id, user_id FROM visitor_identities WHERE user_id = {scenario.user} ORDER BY 1"),
            sorted([[scenario.visitor, str(scenario.user)], [scenario.second_visitor, str(scenario.user)]]),
            "both visitors identified as the user",
        )

        a, b, c, d = self.catalogue.asins
        context = api(f"/api/users/{scenario.user}/context")
        self.assertEqual(set(context["recent_items"]), {a, b, c, d}, context)
        self.assertEqual(sorted(context["purchased"]), sorted([a, b, c]), context)
        self.assertTrue(set(context["recent_categories"]) <= set(self.catalogue.category.values()), context)
        for visitor in (scenario.visitor, scenario.second_visitor):
            self.assertEqual(api(f"/api/visitors/{visitor}/context")["recent_items"], [],
                             "the visitor's context went to the user")

        grown = {reason: count - unused_before[reason] for reason, count in self.unused_counts().items()}
        self.assertEqual(grown, scenario.unused, "the messages not used, counted by reason")
        return context

    def run_scenario(self, sdk, send, via_proxy=False):
        scenario = Scenario(self.catalogue, sdk)
        before = self.unused_counts()
        proxy = RetryProxy() if via_proxy else None
        try:
            send(scenario, proxy.url if proxy else BASE_URL)
        finally:
            if proxy:
                proxy.close()
        context = self.check(scenario, before if not via_proxy else self.twice(before, scenario))
        return scenario, context, proxy

    @staticmethod
    def twice(before, scenario):
        """A retried batch's unusable messages are counted on each delivery."""
        return {reason: before[reason] + scenario.unused.get(reason, 0) for reason in before}

    def test_analytics_node(self):
        self.run_scenario("node", send_with_node)

    def test_analytics_python(self):
        self.run_scenario("python", send_with_python)

    def test_analytics_python_gzip(self):
        self.run_scenario("python-gzip", lambda scenario, host: send_with_python(scenario, host, gzip=True))

    def test_a_batch_retried_after_a_503_is_stored_and_counted_once(self):
        for sdk, send in (("node", send_with_node), ("python", send_with_python)):
            with self.subTest(sdk=sdk):
                _, plain, _ = self.run_scenario(sdk, send)
                scenario, retried, proxy = self.run_scenario(sdk, send, via_proxy=True)
                batches = [(path, status) for path, status, _ in proxy.batches]
                self.assertEqual(batches, [("/v1/batch", 200), ("/v1/batch", 200)],
                                 "taken, answered 503 by the proxy, retried")
                first, second = (json.loads(body)["batch"] for _, _, body in proxy.batches)
                self.assertEqual([m["messageId"] for m in first], [m["messageId"] for m in second])
                self.assertEqual(retried["recent_categories"], plain["recent_categories"],
                                 "counted once in Redis: the same counts as a batch sent once")
                self.assertEqual(
                    psql(f"SELECT count(*) FROM interaction_logs WHERE user_id = {scenario.user}"),
                    [[str(len(scenario.expected_rows))]],
                    "stored once",
                )


if __name__ == "__main__":
    unittest.main(verbosity=2)

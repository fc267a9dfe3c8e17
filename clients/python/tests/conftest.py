"""The real service for the tests: ``event-ingest serve`` on a free port, with a database, a journal
directory and a Redis key prefix of its own, all removed afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("EVENT_INGEST_BIN", ROOT / "target" / "debug" / "event-ingest"))
PG = os.environ.get("EI_TEST_PG", "postgres://postgres@127.0.0.1:5432")

#: Catalogue items the tests use: (asin, category).
ITEMS = [
    ("B0PY000001", "Books"),
    ("B0PY000002", "Books"),
    ("B0PY000003", "Toys & Games"),
    ("B0PY000004", "Garden"),
    ("B0PY000005", "Toys & Games"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    base_url: str
    database_url: str
    prefix: str
    process: subprocess.Popen[bytes]
    journal: str

    def sql(self, query: str) -> str:
        """Runs SQL in the service's database; the rows as ``psql -tA`` prints them."""
        return subprocess.run(
            ["psql", "-X", "-qtA", self.database_url, "-c", query],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def wait_for(self, what: str, condition: Callable[[], bool], seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def rows(self, where: str = "true") -> int:
        return int(self.sql(f"SELECT count(*) FROM interaction_logs WHERE {where}"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        subprocess.run(
            ["psql", "-X", "-q", f"{PG}/postgres", "-c",
             f"DROP DATABASE IF EXISTS {self.database_url.rsplit('/', 1)[1]} WITH (FORCE)"],
            check=False,
            capture_output=True,
        )
        keys = subprocess.run(
            ["redis-cli", "--scan", "--pattern", f"{self.prefix}*"], capture_output=True, text=True
        ).stdout.split()
        if keys:
            subprocess.run(["redis-cli", "del", *keys], capture_output=True)
        shutil.rmtree(self.journal, ignore_errors=True)


def start_service(**env: str) -> Service:
    if not BIN.exists():
        raise RuntimeError(f"no service binary at {BIN}: build it (cargo build) or set EVENT_INGEST_BIN")
    name = f"ei_py_{secrets.token_hex(6)}"
    database_url = f"{PG}/{name}"
    prefix = f"py:{name}:"
    journal = tempfile.mkdtemp(prefix="ei-py-journal-")
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve"],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "JOURNAL_DIR": journal,
            "REDIS_KEY_PREFIX": prefix,
            "BATCH_INTERVAL_MS": "20",
            # A debug build on a busy machine can miss the default 50 ms Redis deadline; these
            # tests read the context.
            "REDIS_TIMEOUT_MS": "1000",
            "RUST_LOG": "warn",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    service = Service(f"http://127.0.0.1:{port}", database_url, prefix, process, journal)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(f"{service.base_url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError("the service did not start")
        time.sleep(0.1)
    values = ", ".join(f"('{asin}')" for asin, _ in ITEMS)
    products = ", ".join(f"('{asin}', '{asin}', '{category}', '{{}}')" for asin, category in ITEMS)
    service.sql(
        f"INSERT INTO items (asin) VALUES {values}; "
        f"INSERT INTO products (asin, title, main_category, raw_metadata) VALUES {products}"
    )
    return service


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    """A service without keys, shared by the tests that need nothing else."""
    started = start_service()
    yield started
    started.stop()


@pytest.fixture
def own_service(request: pytest.FixtureRequest) -> Iterator[Callable[..., Service]]:
    """Starts services with settings of their own (``own_service(API_KEYS="...")``)."""
    started: list[Service] = []

    def start(**env: str) -> Service:
        s = start_service(**env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def user_id() -> int:
    """A user no other test uses."""
    return secrets.randbelow(10**12) + 1


def first_row(service: Service, query: str) -> Optional[str]:
    out = service.sql(query)
    return out.splitlines()[0] if out else None

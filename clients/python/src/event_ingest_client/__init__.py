"""The Python client of event-ingest, with the seed's names: log events (``log_event``,
``log_events``, ``identify``), read the realtime context (``get_recent_items``,
``get_recent_categories``, ``get_context``), and re-rank with it
(``ReRankingService().rerank_items(user_id, ranked_items)``); each with blocking and with
``async`` I/O."""

from ._http import RetryPolicy
from .client import (
    AsyncEventClient,
    BatchResult,
    Context,
    EventClient,
    EventType,
    LoggedEvent,
    Rejection,
)
from .errors import EventIngestError, RejectedError, UnavailableError
from .rerank import AsyncReRankingService, Reranked, ReRankingService

#: The seed's name for the context's reader.
RedisContextService = EventClient

__all__ = [
    "AsyncEventClient",
    "AsyncReRankingService",
    "BatchResult",
    "Context",
    "EventClient",
    "EventIngestError",
    "EventType",
    "LoggedEvent",
    "RedisContextService",
    "Rejection",
    "RejectedError",
    "ReRankingService",
    "Reranked",
    "RetryPolicy",
    "UnavailableError",
]

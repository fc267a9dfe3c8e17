"""What a call raises: the service's refusal of the request (4xx, with its ``code`` and ``field``),
or the service out of reach after every retry."""

from __future__ import annotations

from typing import Any, Optional


class EventIngestError(Exception):
    """Any failure of a call to the service."""


class RejectedError(EventIngestError):
    """The service refused the request for what it holds (a 4xx): sending it again cannot help.

    ``code`` is the service's (``invalid_field``, ``missing_api_key``, ``server_key_required``,
    ...), ``field`` the field at fault when there is one.
    """

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class UnavailableError(EventIngestError):
    """The service could not take the request, even after every retry: unreachable, too slow, or
    answering 408, 429 or 5xx. ``status`` and ``code`` are the last answer's, if there was one.
    ``events`` holds the events that were being sent, with the ``event_id`` and ``timestamp``
    they were given: sent again with those, later, each is stored once."""

    def __init__(
        self,
        message: str,
        attempts: int,
        status: Optional[int] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status
        self.code = code
        self.events: list[dict[str, Any]] = []

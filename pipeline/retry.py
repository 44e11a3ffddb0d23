"""A request retried on a transient connection fault (reset, refused while restarting, cut short),
with backoff, a few times: one dropped keep-alive connection must not fail a whole measurement.
A timeout is not retried (a slow server is what is being measured), nor is any HTTP status.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

TRANSIENT = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
ATTEMPTS = 3
BACKOFF_S = 0.5  # then 1.0: a server gone for good fails within ~2 s


def post(url: str, *, client: httpx.Client | None = None, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
         **kwargs: Any) -> httpx.Response:
    """`client.post(url, **kwargs)` (or `httpx.post`), retried on TRANSIENT faults."""
    send = client.post if client is not None else httpx.post
    for attempt in range(attempts):
        try:
            return send(url, **kwargs)
        except TRANSIENT:
            if attempt == attempts - 1:
                raise
            time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")

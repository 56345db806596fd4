"""One bounded HTTP GET for bodies from servers we do not control (status pages, feeds).

Somebody else's server may be slow, huge, dribbling or dead. `bounded_get` bounds the whole
exchange in time and the decoded body in size, supports conditional GET (ETag and
Last-Modified), and turns every network problem into one `FetchError` with a one-line
reason. It returns bytes and never interprets them: parsing is the caller's job.

`FetchError` is also what the parsers raise (statuspage.StatusPageError and
veille.sources.SourceError are this class), so this module must load without httpx:
httpx is imported by the first fetch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .text import excerpt

if TYPE_CHECKING:
    import httpx


class FetchError(Exception):
    """A body could not be fetched or read; `reason` says why in one line."""

    def __init__(self, reason: str, source: str) -> None:
        self.reason = reason
        self.source = excerpt(source)
        super().__init__(f"{reason} from {self.source}")


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int  # 2xx, or 304 when a validator was sent and the server says nothing changed
    body: bytes  # empty for a 304
    # The validators to send next time. A 304 that omits them keeps the ones sent, which
    # are still valid by definition.
    etag: str | None
    last_modified: str | None


async def bounded_get(client: httpx.AsyncClient, url: str, *, timeout_s: float, max_bytes: int,
                      accept: str, etag: str | None = None,
                      last_modified: str | None = None) -> Fetched:
    """GET url within timeout_s and max_bytes (decoded); FetchError on any failure."""
    import httpx

    headers = {"Accept": accept}
    if etag is not None:
        headers["If-None-Match"] = etag
    if last_modified is not None:
        headers["If-Modified-Since"] = last_modified
    conditional = len(headers) > 1
    too_large = f"too large (over {_size(max_bytes)})"
    try:
        # httpx's timeout bounds each read, so a server dribbling a byte at a time would
        # never trip it; the outer deadline bounds the whole fetch.
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", url, timeout=timeout_s, follow_redirects=True,
                                     headers=headers) as response:
                # A 304 only answers a conditional request; unasked, it is a broken server.
                if response.status_code == 304 and conditional:
                    return Fetched(
                        304, b"",
                        _header(response, "ETag") or etag,
                        _header(response, "Last-Modified") or last_modified,
                    )
                if not response.is_success:
                    raise FetchError(f"HTTP {response.status_code}", url)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(too_large, url)
                body = bytearray()
                # Decoded bytes are counted, so a small gzip body cannot inflate past the cap.
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(too_large, url)
                return Fetched(response.status_code, bytes(body),
                               _header(response, "ETag"), _header(response, "Last-Modified"))
    except (TimeoutError, httpx.TimeoutException):
        raise FetchError(f"timed out after {timeout_s:g} s", url) from None
    except httpx.ConnectError as exc:
        raise FetchError(f"could not connect: {_why(exc)}", url) from None
    # OSError: httpx maps socket errors to its own types; this is insurance, not a known path.
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise FetchError(f"request failed: {_why(exc)}", url) from None


def _header(response: httpx.Response, name: str) -> str | None:
    """A validator header to echo back later: kept verbatim but bounded, None if absent."""
    value = response.headers.get(name)
    # Validators go back to the same server as they came, so they are not neutralised; a
    # hostile length is still refused rather than stored and resent on every poll.
    if not value or len(value) > 1_000:
        return None
    return value


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def _why(exc: Exception) -> str:
    """The exception's own words, one line, or its type when it has none."""
    return excerpt(str(exc), 120) or type(exc).__name__

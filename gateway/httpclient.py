"""Outbound HTTP to the platform (Cells' REST API, node-access checks), on httpx.

One pooled client per purpose: keep-alive connections (a reconnect storm resolves thousands of
tokens, each in a few calls), TLS with an optional CA bundle, a timeout on every phase, no
redirects (a redirect of an API call is a misconfiguration to report, not to follow), and a cap
on the body read. Every failure to get an answer is one exception, :class:`HttpError`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio

from gateway import __version__

MAX_BODY: Final = 8 * 1024 * 1024
USER_AGENT: Final = f"cells-ws-gateway/{__version__}"


class HttpError(Exception):
    """No answer: connection, TLS, timeout, protocol, or a body over the cap."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class HttpClient:
    """A pool of connections for one kind of outbound call. Close it with :meth:`aclose`."""

    def __init__(
        self,
        *,
        timeout: float,
        ca_file: str | None = None,
        max_connections: int = 64,
        max_body: int = MAX_BODY,
    ) -> None:
        self.timeout = timeout
        self.max_body = max_body
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._client = httpx.AsyncClient(
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"user-agent": USER_AGENT},
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        json_body: Any = None,
    ) -> HttpResponse:
        """Send one request and read the whole answer within ``timeout``; HttpError if none came."""
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        with trio.move_on_after(self.timeout) as scope:
            try:
                async with self._client.stream(method, url, headers=headers, json=json_body) as response:
                    body = await self._read(response)
                    return HttpResponse(response.status_code, body, dict(response.headers))
            except httpx.HTTPError as exc:
                raise HttpError(f"{method} {_where(url)}: {exc.__class__.__name__}: {exc}"[:300]) from None
        assert scope.cancelled_caught
        raise HttpError(f"{method} {_where(url)}: no answer within {self.timeout:g} s")

    async def _read(self, response: httpx.Response) -> bytes:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(f"response body over {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()


def _where(url: str) -> str:
    """The URL without its query (which never holds secrets here, but may be long)."""
    return httpx.URL(url).copy_with(query=None).__str__()[:200]

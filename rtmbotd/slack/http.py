"""HTTP/1.1 POSTs to Slack's Web API over keep-alive connections on the daemon's loop.

Why the daemon does not use slack_sdk's clients here (measured on this project's fake
Slack, loopback, 500 calls, see bench/README.md): slack_sdk's `WebClient` blocks and
opens a new connection per call (on Slack that is a TLS handshake per message); its
`AsyncWebClient` needs aiohttp, 10 MiB resident before the first call. A Web API call is
a POST answered with JSON; this does that and no more, on connections that stay open.
Plugins still get slack_sdk's `WebClient` (rtmbotd.slack.plugin_client).

Errors: every failure to get a complete answer raises `HttpError` (the caller retries).
A reused connection found closed before any byte of the answer came back is replaced
by a new one and the request sent again: servers close idle keep-alive connections at
will. (Had the server read the request before closing, it would run twice: the risk
every keep-alive client takes, and rarer than a retry after a timeout.)
"""
from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
import urllib.parse
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Callable

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
IDLE_TIMEOUT = 30.0          # an idle connection older than this is closed, not reused
MAX_CONNECTIONS = 16         # requests in flight per client; more wait for a free one
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(Exception):
    """No complete HTTP answer: refused, reset, timed out, or not HTTP."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]      # lower-case names; a repeated header keeps its last value
    body: bytes


class _Stale(Exception):
    """A reused connection was closed before any byte of the answer came back."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float
    reused: bool = False

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """POSTs to one origin (`base_url`'s scheme, host and port), optionally via a proxy."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, proxy: str | None = None,
                 user_agent: str = "rtmbotd", clock: Callable[[], float] = time.monotonic) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.path = url.path or "/"
        self.tls = url.scheme == "https"
        self.host_header = url.netloc.rpartition("@")[2]
        self.timeout = timeout
        self.proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self.user_agent = user_agent
        self.clock = clock
        self._idle: deque[_Conn] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._free = MAX_CONNECTIONS
        self._waiters: deque[asyncio.Future] = deque()

    async def post(self, path: str, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> Response:
        """POST `body` to base path + `path`; the answer, whatever its status."""
        head = [f"POST {self.path}{path} HTTP/1.1", f"Host: {self.host_header}",
                f"User-Agent: {self.user_agent}", "Accept: application/json",
                "Accept-Encoding: gzip", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        await self._slot()
        # A timer cancelling this task, rather than asyncio.wait_for and the task it adds.
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()
        timer = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            return await self._exchange(request)
        except asyncio.CancelledError:
            # Ours alone: the timeout. Another cancel arriving too (3.11+ counts them) wins.
            if not expired or (hasattr(task, "uncancel") and task.uncancel() > 0):
                raise
            raise HttpError(f"no answer within {self.timeout:g} s") from None
        finally:
            timer.cancel()
            self._release()

    async def _slot(self) -> None:
        """Take a connection slot; callers waiting for one get it in arrival order."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter                     # resolved by _release: the slot is ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()              # handed a slot it will not use
            else:
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        """Give the slot to the longest waiting caller, else back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def _exchange(self, request: bytes) -> Response:
        while True:
            conn = await self._acquire()
            try:
                response, keep = await self._roundtrip(conn, request)
            except _Stale:
                conn.close()
                continue                 # only reused connections go stale: the next is fresh
            except BaseException:
                conn.close()
                raise
            if keep and len(self._idle) < MAX_CONNECTIONS:
                conn.idle_since, conn.reused = self.clock(), True
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def _acquire(self) -> _Conn:
        now = self.clock()
        while self._idle and not self._usable(self._idle[0], now):
            self._idle.popleft().close()     # the oldest first: closed ones free their sockets
        while self._idle:
            conn = self._idle.pop()          # the most recently used is the likeliest alive
            if self._usable(conn, now):
                return conn
            conn.close()
        return await self._connect()

    @staticmethod
    def _usable(conn: _Conn, now: float) -> bool:
        return now - conn.idle_since < IDLE_TIMEOUT and not conn.reader.at_eof()

    async def _connect(self) -> _Conn:
        try:
            if self.proxy is None:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._context() if self.tls else None,
                    server_hostname=self.host if self.tls else None)
            else:
                reader, writer = await self._tunnel()
        except OSError as exc:               # ssl.SSLError is one too
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        except asyncio.IncompleteReadError:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: the proxy hung up") from None
        return _Conn(reader, writer, self.clock())

    async def _tunnel(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Through an HTTP proxy: CONNECT, then TLS (if any) inside the tunnel."""
        proxy = self.proxy
        assert proxy is not None
        reader, writer = await asyncio.open_connection(proxy.hostname, proxy.port or 80)
        try:
            head = [f"CONNECT {self.host}:{self.port} HTTP/1.1", f"Host: {self.host}:{self.port}",
                    f"User-Agent: {self.user_agent}"]
            if proxy.username is not None:
                user = urllib.parse.unquote(proxy.username)
                password = urllib.parse.unquote(proxy.password or "")
                token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
                head.append(f"Proxy-Authorization: Basic {token}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            status, _, _ = await _read_head(reader)
            if status != 200:
                raise HttpError(f"proxy {proxy.hostname}:{proxy.port} refused CONNECT: HTTP {status}")
            if self.tls and hasattr(writer, "start_tls"):                  # Python >= 3.11
                await writer.start_tls(self._context(), server_hostname=self.host)
            elif self.tls:                                                   # 3.10: by hand
                transport = await asyncio.get_running_loop().start_tls(
                    writer.transport, writer.transport.get_protocol(), self._context(),
                    server_hostname=self.host)
                writer._transport = transport            # noqa: SLF001 - what 3.11's start_tls does
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _roundtrip(self, conn: _Conn, request: bytes) -> tuple[Response, bool]:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            first = await conn.reader.readexactly(1)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if conn.reused:              # not a byte of the answer: closed while idle
                raise _Stale() from None
            raise HttpError(f"connection lost: {exc or type(exc).__name__}") from None
        except OSError as exc:
            raise HttpError(f"connection lost: {exc}") from None
        try:
            status, version, headers = await _read_head(conn.reader, first)
            while 100 <= status < 200:    # interim answers (100 Continue): the real one follows
                status, version, headers = await _read_head(conn.reader)
            if status in (204, 304):     # no body, whatever the headers say
                body = b""
            else:
                body = await _read_body(conn.reader, headers)
        except (OSError, EOFError, asyncio.LimitOverrunError) as exc:   # EOFError: IncompleteReadError
            raise HttpError(f"answer cut short: {exc or type(exc).__name__}") from None
        encoding = headers.get("content-encoding", "").lower()
        if encoding == "gzip":
            try:
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            except zlib.error as exc:
                raise HttpError(f"bad gzip body: {exc}") from None
        elif encoding not in ("", "identity"):
            raise HttpError(f"unsupported Content-Encoding {encoding!r}")
        delimited = (status in (204, 304) or "content-length" in headers
                     or "chunked" in headers.get("transfer-encoding", "").lower())
        keep = version == "HTTP/1.1" and delimited and "close" not in headers.get("connection", "").lower()
        return Response(status, headers, body), keep

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


async def _read_head(reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, str, dict[str, str]]:
    """Status code, HTTP version and headers of an answer (`first`: its bytes read already)."""
    try:
        raw = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError("answer headers too long") from None
    if len(raw) > MAX_HEADER:
        raise HttpError("answer headers too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _DIGITS.fullmatch(parts[1]):
        raise HttpError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The body: chunked, Content-Length, or up to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks, size = [], 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size_field = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_field):
                raise HttpError(f"bad chunk size {line[:40]!r}")
            n = int(size_field, 16)
            if n == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":     # trailers
                    pass
                return b"".join(chunks)
            size += n
            if size > MAX_BODY:
                raise HttpError("answer too large")
            chunks.append(await reader.readexactly(n))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length) or int(length) > MAX_BODY:
            raise HttpError(f"bad Content-Length {length[:20]!r}")
        return await reader.readexactly(int(length))
    body = await reader.read(MAX_BODY + 1)           # no length: the body runs to EOF
    while body and not reader.at_eof() and len(body) <= MAX_BODY:
        more = await reader.read(MAX_BODY + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > MAX_BODY:
        raise HttpError("answer too large")
    return body

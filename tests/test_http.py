"""rtmbotd.slack.http and SlackWeb against real sockets: a scripted HTTP server on
127.0.0.1 (with TLS from a throwaway CA, and an HTTP CONNECT proxy) answering exactly
the bytes each test needs, including the broken ones."""
from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from rtmbotd.slack.http import HttpClient, HttpError
from rtmbotd.slack.web import SlackWeb, WebError

Answer = Callable[[dict], "bytes | None"]     # request -> raw answer (None: close, say nothing)


def ok_json(obj: object, *, status: str = "200 OK", extra: str = "") -> bytes:
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


class Server:
    """Reads HTTP/1.1 requests (Content-Length bodies) and writes what `answer` says."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[dict] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.close()
        self.server.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}/api/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = {"line": head[0], "headers": headers, "body": body, "conn": conn}
                self.requests.append(request)
                raw = self.answer(request)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def api_url(server: asyncio.AbstractServer) -> str:
    """The Web API base URL of a server listening on 127.0.0.1."""
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/"


async def silent_server(until: asyncio.Event) -> asyncio.AbstractServer:
    """A server on 127.0.0.1 that accepts and never answers (until `until` is set)."""
    async def hang(reader, writer):
        await until.wait()
    return await asyncio.start_server(hang, "127.0.0.1", 0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_calls_share_one_keepalive_connection_and_send_a_proper_request():
    async def scenario():
        async with Server(lambda r: ok_json({"ok": True, "n": len(r["body"])})) as srv:
            web = SlackWeb("xoxb-secret", srv.url)
            answers = [await web.call("chat.postMessage", json=True, channel="C1", text=f"é{i}")
                       for i in range(5)]
            form = await web.call("conversations.list", limit=200, exclude_archived=True, types="im")
            await web.close()
            return srv, answers, form
    srv, answers, form = run(scenario())
    assert srv.connections == 1 and len(srv.requests) == 6
    first = srv.requests[0]
    assert first["line"] == "POST /api/chat.postMessage HTTP/1.1"
    assert first["headers"]["authorization"] == "Bearer xoxb-secret"
    assert first["headers"]["content-type"] == "application/json; charset=utf-8"
    assert json.loads(first["body"]) == {"channel": "C1", "text": "é0"}
    assert [a["n"] for a in answers] == [len(r["body"]) for r in srv.requests[:5]]
    last = srv.requests[5]
    assert last["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert last["body"] == b"limit=200&exclude_archived=true&types=im"
    assert form["ok"] is True


def test_chunked_gzip_close_and_eof_delimited_answers():
    payload = json.dumps({"ok": True, "x": "y" * 5000}).encode()
    zipped = gzip.compress(payload)
    chunks = b"".join(f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
                      for part in (payload[:7], payload[7:4000], payload[4000:]))
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n",
        f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(zipped)}\r\n\r\n".encode() + zipped,
        f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload,
        b"HTTP/1.0 200 OK\r\n\r\n" + payload,
    ]

    async def scenario():
        answer_of = iter(answers)
        async with Server(lambda req: next(answer_of)) as srv:
            http = HttpClient(srv.url)
            results = [json.loads((await http.post("m", b"{}", "application/json")).body) for _ in range(3)]
            # the fourth answer has no length: its body ends when the server hangs up
            task = asyncio.create_task(http.post("m", b"{}", "application/json"))
            while len(srv.requests) < 4:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not task.done()
            srv.writers[-1].close()
            results.append(json.loads((await task).body))
            await http.close()
            return srv, results
    srv, results = run(scenario())
    assert all(r == json.loads(payload) for r in results)
    # chunked and gzip answers kept the connection; "Connection: close" and HTTP/1.0 did not
    assert [r["conn"] for r in srv.requests] == [1, 1, 1, 2]


def test_server_closing_an_idle_connection_costs_no_request_and_no_duplicate():
    async def scenario():
        async with Server(lambda r: ok_json({"ok": True})) as srv:
            http = HttpClient(srv.url)
            await http.post("a", b"1", "text/plain")
            srv.writers[0].close()              # the server drops the idle keep-alive connection
            await asyncio.sleep(0.05)
            await http.post("b", b"2", "text/plain")
            await http.close()
            return srv
    srv = run(scenario())
    assert [(r["line"].split()[1], r["conn"]) for r in srv.requests] == [("/api/a", 1), ("/api/b", 2)]


def test_connection_dropped_mid_answer_is_an_error_not_a_retry():
    async def scenario():
        async with Server(lambda r: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\"") as srv:
            http = HttpClient(srv.url, timeout=5)
            task = asyncio.create_task(http.post("a", b"1", "text/plain"))
            while not srv.requests:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            srv.writers[0].close()
            with pytest.raises(HttpError, match="cut short"):
                await task
            return srv
    assert len(run(scenario()).requests) == 1


@pytest.mark.parametrize("raw, match", [
    (b"SMTP ready\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", "unsupported Content-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", "bad gzip body"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "too long"),
])
def test_malformed_answers_raise_http_error(raw, match):
    async def scenario():
        async with Server(lambda r: raw) as srv:
            http = HttpClient(srv.url, timeout=5)
            with pytest.raises(HttpError, match=match):
                await http.post("a", b"", "text/plain")
            await http.close()
    run(scenario())


def test_silence_times_out_and_refused_connection_is_reported():
    async def scenario():
        never = asyncio.Event()
        server = await silent_server(never)
        url = api_url(server)
        http = HttpClient(url, timeout=0.3)
        with pytest.raises(HttpError, match="no answer within 0.3 s"):
            await http.post("a", b"", "text/plain")
        server.close()
        never.set()
        await server.wait_closed()
        refused = HttpClient(url, timeout=5)
        with pytest.raises(HttpError, match="cannot connect to 127.0.0.1"):
            await refused.post("a", b"", "text/plain")
    run(scenario())


def test_slack_answers_become_web_errors():
    answers = {
        "/api/limited": ok_json({"ok": False, "error": "ratelimited"}, status="429 Too Many Requests",
                                extra="Retry-After: 7\r\n"),
        "/api/down": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\noops",
        "/api/refused": ok_json({"ok": False, "error": "channel_not_found"}),
        "/api/html": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>",
        "/api/gone": b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
    }

    async def scenario():
        async with Server(lambda r: answers[r["line"].split()[1]]) as srv:
            web = SlackWeb("xoxb-1", srv.url)
            errors = {}
            for path in answers:
                with pytest.raises(WebError) as info:
                    await web.call(path.rsplit("/", 1)[1])
                errors[path.rsplit("/", 1)[1]] = info.value
            with pytest.raises(WebError, match="bad request"):
                await web.call("chat.postMessage", json=True, text=object())
            await web.close()
            return errors
    e = run(scenario())
    assert (e["limited"].status, e["limited"].retry_after, e["limited"].permanent) == (429, 7.0, False)
    assert e["down"].transport and not e["down"].permanent and e["down"].error == "http_503"
    assert e["refused"].error == "channel_not_found" and e["refused"].permanent
    assert e["html"].transport and not e["html"].permanent
    assert e["gone"].permanent and e["gone"].error.startswith("http_404")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a certificate for `localhost` it signed (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=rtmbotd test CA")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    sh("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


def _server_tls(files: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files["cert"], files["key"])
    return ctx


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that tunnels to 127.0.0.1 or answers `refuse`."""

    def __init__(self, refuse: str | None = None, hang_up: bool = False) -> None:
        self.refuse = refuse
        self.hang_up = hang_up
        self.targets: list[str] = []
        self.auth: list[str | None] = []

    async def __aenter__(self) -> "ConnectProxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        target = head[0].split()[1]
        self.targets.append(target)
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        self.auth.append(fields.get("proxy-authorization"))
        if self.hang_up:
            writer.close()
            return
        if self.refuse:
            writer.write(f"HTTP/1.1 {self.refuse}\r\nContent-Length: 0\r\n\r\n".encode())
            writer.close()
            return
        port = int(target.rsplit(":", 1)[1])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_tls_verifies_the_server_against_the_system_trust_store(tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files["ca"]))

    async def scenario():
        async with Server(lambda r: ok_json({"ok": True}), tls=_server_tls(tls_files)) as srv:
            web = SlackWeb("xoxb-1", srv.url)
            good = [await web.call("auth.test") for _ in range(3)]
            await web.close()
            bad = HttpClient(srv.url.replace("localhost", "127.0.0.1"), timeout=5)   # name mismatch
            with pytest.raises(HttpError, match="cannot connect"):
                await bad.post("auth.test", b"", "text/plain")
            return srv, good
    srv, good = run(scenario())
    assert all(g["ok"] for g in good) and srv.connections == 1


def test_https_through_a_connect_proxy(tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files["ca"]))

    async def scenario():
        async with Server(lambda r: ok_json({"ok": True}), tls=_server_tls(tls_files)) as srv, \
                ConnectProxy() as proxy, ConnectProxy(refuse="407 Proxy Authentication Required") as refusing:
            http = HttpClient(srv.url, proxy=proxy.url, timeout=5)
            answers = [json.loads((await http.post("auth.test", b"", "text/plain")).body) for _ in range(2)]
            await http.close()
            denied = HttpClient(srv.url, proxy=refusing.url, timeout=5)
            with pytest.raises(HttpError, match="refused CONNECT: HTTP 407"):
                await denied.post("auth.test", b"", "text/plain")
            return srv, proxy, answers
    srv, proxy, answers = run(scenario())
    assert answers == [{"ok": True}] * 2
    assert proxy.targets == [f"localhost:{srv.port}"] and srv.connections == 1


def test_proxy_from_environment_is_used_except_for_loopback(monkeypatch):
    async def scenario():
        async with Server(lambda r: ok_json({"ok": True})) as srv, ConnectProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            for name in ("NO_PROXY", "no_proxy", "http_proxy"):
                monkeypatch.delenv(name, raising=False)
            # a name only the proxy can reach (it tunnels every target to 127.0.0.1)
            far = SlackWeb("xoxb-1", f"http://slack.invalid:{srv.port}/api/")
            await far.call("auth.test")
            await far.close()
            near = SlackWeb("xoxb-1", srv.url)          # loopback is never proxied
            await near.call("auth.test")
            await near.close()
            return srv, proxy
    srv, proxy = run(scenario())
    assert proxy.targets == [f"slack.invalid:{srv.port}"]
    assert len(srv.requests) == 2


def test_requests_beyond_the_connection_limit_wait_for_a_free_connection():
    from rtmbotd.slack import http as http_module
    release = asyncio.Event()
    in_flight, most = 0, 0

    async def scenario():
        async def slow(reader, writer):
            nonlocal in_flight, most
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(n)
                    in_flight += 1
                    most = max(most, in_flight)
                    await release.wait()
                    in_flight -= 1
                    writer.write(ok_json({"ok": True}))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        http = HttpClient(api_url(server), timeout=10)
        calls = [asyncio.create_task(http.post("m", b"{}", "application/json"))
                 for _ in range(http_module.MAX_CONNECTIONS + 9)]
        while in_flight < http_module.MAX_CONNECTIONS:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert in_flight == http_module.MAX_CONNECTIONS      # the rest wait their turn
        release.set()
        answers = await asyncio.gather(*calls)
        await http.close()
        server.close()
        return answers
    answers = run(scenario())
    assert len(answers) == 16 + 9 and all(a.status == 200 for a in answers)
    assert most == 16


def test_cancelling_a_call_is_not_mistaken_for_its_timeout():
    async def scenario():
        never = asyncio.Event()
        server = await silent_server(never)
        http = HttpClient(api_url(server), timeout=10)
        task = asyncio.create_task(http.post("a", b"", "text/plain"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # its connection slot came back: a call with a short timeout still gets one
        http.timeout = 0.2
        with pytest.raises(HttpError, match="no answer within 0.2 s"):
            await http.post("b", b"", "text/plain")
        never.set()
        server.close()
    run(scenario())


def test_proxy_credentials_are_sent_and_a_proxy_hanging_up_is_an_http_error():
    async def scenario():
        async with Server(lambda r: ok_json({"ok": True})) as srv, ConnectProxy() as proxy, \
                ConnectProxy(hang_up=True) as rude:
            with_auth = proxy.url.replace("http://", "http://b%C3%B6b:p%40ss@")
            http = HttpClient(srv.url, proxy=with_auth, timeout=5)
            await http.post("auth.test", b"", "text/plain")
            await http.close()
            with pytest.raises(HttpError, match="the proxy hung up"):
                await HttpClient(srv.url, proxy=rude.url, timeout=5).post("auth.test", b"", "text/plain")
            return proxy
    proxy = run(scenario())
    import base64
    assert proxy.auth == ["Basic " + base64.b64encode("böb:p@ss".encode()).decode()]


@pytest.mark.parametrize("raw, match", [
    ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), "bad Content-Length"),
    ("HTTP/1.1 \u00b200 OK\r\n\r\n".encode("latin-1"), "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
])
def test_numbers_are_ascii_digits_only(raw, match):
    async def scenario():
        async with Server(lambda r: raw) as srv:
            with pytest.raises(HttpError, match=match):
                await HttpClient(srv.url, timeout=5).post("a", b"", "text/plain")
    run(scenario())


def test_a_reused_connection_reset_mid_answer_is_not_sent_again():
    async def scenario():
        answers = iter([ok_json({"ok": True}), b"HTTP/1.1 200 OK\r\nContent-"])

        async with Server(lambda r: next(answers)) as srv:
            http = HttpClient(srv.url, timeout=5)
            await http.post("a", b"1", "text/plain")
            task = asyncio.create_task(http.post("b", b"2", "text/plain"))
            while len(srv.requests) < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            sock = srv.writers[0].get_extra_info("socket")
            import socket as socket_module
            import struct
            sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_LINGER, struct.pack("ii", 1, 0))
            srv.writers[0].transport.abort()          # RST after part of the answer
            with pytest.raises(HttpError):
                await task
            return srv
    assert len(run(scenario()).requests) == 2


def test_interim_and_bodiless_answers():
    answers = iter([b"HTTP/1.1 100 Continue\r\n\r\n" + ok_json({"ok": True, "n": 1}),
                    b"HTTP/1.1 204 No Content\r\n\r\n", ok_json({"ok": True, "n": 3})])

    async def scenario():
        async with Server(lambda r: next(answers)) as srv:
            http = HttpClient(srv.url, timeout=5)
            got = [await http.post("a", b"", "text/plain") for _ in range(3)]
            await http.close()
            return srv, got
    srv, got = run(scenario())
    assert [r.status for r in got] == [200, 204, 200] and got[1].body == b""
    assert json.loads(got[2].body)["n"] == 3 and srv.connections == 1


def test_waiting_callers_get_connections_in_arrival_order(monkeypatch):
    from rtmbotd.slack import http as http_module
    monkeypatch.setattr(http_module, "MAX_CONNECTIONS", 1)
    order = []

    async def scenario():
        async with Server(lambda r: ok_json({"ok": True})) as srv:
            http = HttpClient(srv.url, timeout=5)

            async def call(name):
                await http.post(name, b"", "text/plain")
                order.append(name)
            first = asyncio.create_task(call("first"))
            await asyncio.sleep(0)
            waiting = [asyncio.create_task(call(f"w{i}")) for i in range(3)]
            await asyncio.sleep(0)
            await first
            late = asyncio.create_task(call("late"))       # must not overtake w0..w2
            await asyncio.gather(*waiting, late)
            await http.close()
    run(scenario())
    assert order == ["first", "w0", "w1", "w2", "late"]


@pytest.mark.skipif(not hasattr(asyncio.Task, "uncancel"), reason="Python 3.11+ counts cancels")
def test_a_cancel_arriving_with_the_timeout_still_cancels():
    async def scenario():
        never = asyncio.Event()
        server = await silent_server(never)
        http = HttpClient(api_url(server), timeout=0.2)
        task = asyncio.create_task(http.post("a", b"", "text/plain"))
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_later(0.2, task.cancel)     # same moment as the timeout
        with pytest.raises(asyncio.CancelledError):
            await task
        never.set()
        server.close()
    run(scenario())

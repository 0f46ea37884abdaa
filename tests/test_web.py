"""SlackWeb and the proxy rule against real sockets: an aiohttp server on 127.0.0.1 (with
TLS from a throwaway CA) and a small asyncio HTTP CONNECT proxy in front of it."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from aiohttp import web

from rtmbotd.slack.link import open_websocket
from rtmbotd.slack.proxy import proxy_for
from rtmbotd.slack.web import SlackWeb, WebError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def ok(**fields) -> web.Response:
    return web.json_response({"ok": True, **fields})


@pytest.fixture
def clean_env(monkeypatch):
    """No proxy settings at all: each test sets what it tests (conftest sets NO_PROXY)."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Server:
    """An aiohttp server on 127.0.0.1 recording each request and the client port it came from."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[dict] = []

    async def __aenter__(self) -> "Server":
        async def record(request: web.Request) -> web.StreamResponse:
            if request.path == "/ws":
                return await self._echo(request)
            self.requests.append({"path": request.path, "headers": request.headers,
                                  "body": await request.read(),
                                  "peer": request.transport.get_extra_info("peername")})
            return await self.handler(request)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/api/"

    @staticmethod
    async def _echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo " + msg.data)
        return ws

    @property
    def peers(self) -> set:
        return {r["peer"] for r in self.requests}


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 tunnelling every target to 127.0.0.1:<its port>,
    or answering `refuse`. With `tls`, clients reach the proxy itself over TLS."""

    def __init__(self, refuse: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.refuse = refuse
        self.tls = tls
        self.targets: list[str] = []
        self.auth: list[str | None] = []
        self.heads: list[str] = []        # every request head the proxy itself saw

    async def __aenter__(self) -> "ConnectProxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"https://localhost:{port}" if self.tls else f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        method, target = head[0].split()[:2]
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        self.targets.append(f"{method} {target}")
        self.heads.append("\r\n".join(head))
        self.auth.append(fields.get("proxy-authorization"))
        if self.refuse or method != "CONNECT":
            writer.write(f"HTTP/1.1 {self.refuse or '405 Method Not Allowed'}\r\nContent-Length: 0\r\n\r\n".encode())
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(target.rsplit(":", 1)[1]))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a certificate it signed for `localhost` and `slack.invalid` (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=rtmbotd test CA")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,DNS:slack.invalid\n")
    sh("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.pem", "cert": d / "srv.pem", "key": d / "srv.key"}


@pytest.fixture
def server_tls(tls_files, clean_env) -> ssl.SSLContext:
    """The server's TLS context; the client trusts the throwaway CA as its system store."""
    clean_env.setenv("SSL_CERT_FILE", str(tls_files["ca"]))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files["cert"], tls_files["key"])
    return ctx


def test_calls_share_one_keepalive_connection_and_send_a_proper_request(clean_env):
    async def scenario():
        async def answer(request):
            return ok(n=len(await request.read()))
        async with Server(answer) as srv:
            web_ = SlackWeb("xoxb-secret", srv.url())
            answers = [await web_.call("chat.postMessage", json=True, channel="C1", text=f"é{i}")
                       for i in range(5)]
            form = await web_.call("conversations.list", limit=200, exclude_archived=True, types="im")
            await web_.close()
            return srv, answers, form
    srv, answers, form = run(scenario())
    assert len(srv.requests) == 6 and len(srv.peers) == 1      # one connection, kept alive
    first = srv.requests[0]
    assert first["path"] == "/api/chat.postMessage"
    assert first["headers"]["Authorization"] == "Bearer xoxb-secret"
    assert first["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert first["headers"]["User-Agent"].startswith("rtmbotd/")
    assert json.loads(first["body"]) == {"channel": "C1", "text": "é0"}
    assert [a["n"] for a in answers] == [len(r["body"]) for r in srv.requests[:5]]
    last = srv.requests[5]
    assert last["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert last["body"] == b"limit=200&exclude_archived=true&types=im"
    assert form["ok"] is True


def test_slack_answers_become_web_errors(clean_env):
    answers = {
        "limited": lambda: web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                             headers={"Retry-After": "7"}),
        "down": lambda: web.Response(status=503, text="oops"),
        "down_json": lambda: web.json_response({"ok": False, "error": "internal_error"}, status=500),
        "refused": lambda: web.json_response({"ok": False, "error": "channel_not_found"}),
        "html": lambda: web.Response(text="<html>", content_type="text/html"),
        "gone": lambda: web.Response(status=404, text="not found"),
    }

    async def scenario():
        async def answer(request):
            return answers[request.path.rsplit("/", 1)[1]]()
        async with Server(answer) as srv:
            web_ = SlackWeb("xoxb-1", srv.url())
            errors = {}
            for name in answers:
                with pytest.raises(WebError) as info:
                    await web_.call(name)
                errors[name] = info.value
            with pytest.raises(WebError, match="bad request"):
                await web_.call("chat.postMessage", json=True, text=object())
            await web_.close()
            return errors
    e = run(scenario())
    assert (e["limited"].status, e["limited"].retry_after, e["limited"].permanent) == (429, 7.0, False)
    assert e["down"].transport and not e["down"].permanent and e["down"].error == "http_503"
    assert e["down_json"].transport and e["down_json"].error == "internal_error"
    assert e["refused"].error == "channel_not_found" and e["refused"].permanent
    assert not e["refused"].transport
    assert e["html"].transport and not e["html"].permanent and "not a JSON object" in e["html"].error
    assert e["gone"].permanent and e["gone"].error.startswith("http_404")


def test_a_silent_server_times_out_and_a_refused_connection_is_a_transport_error(clean_env):
    async def scenario():
        never = asyncio.Event()

        async def hang(request):
            await never.wait()
        async with Server(hang) as srv:
            slow = SlackWeb("xoxb-1", srv.url(), timeout=0.3)
            with pytest.raises(WebError) as timed_out:
                await slow.call("auth.test")
            await slow.close()
            never.set()                           # or the server's shutdown waits for it
        with socket.socket() as sock:             # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        nobody = SlackWeb("xoxb-1", f"http://127.0.0.1:{port}/api/")
        with pytest.raises(WebError) as refused:
            await nobody.call("auth.test")
        await nobody.close()
        return timed_out.value, refused.value
    timed_out, refused = run(scenario())
    assert timed_out.transport and not timed_out.permanent
    assert timed_out.error == "no answer within 0.3 s"
    assert refused.transport and not refused.permanent and "127.0.0.1" in refused.error


def test_cancelling_a_call_cancels_it_and_the_client_stays_usable(clean_env):
    async def scenario():
        release = asyncio.Event()
        arrived = asyncio.Event()

        async def answer(request):
            if request.path.endswith("/slow"):
                arrived.set()
                await release.wait()
            return ok()
        async with Server(answer) as srv:
            web_ = SlackWeb("xoxb-1", srv.url(), timeout=30)
            task = asyncio.create_task(web_.call("slow"))
            await arrived.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await web_.call("auth.test")
            await web_.close()
            with pytest.raises(WebError, match="client closed") as closed:
                await web_.call("auth.test")
            release.set()
            return after, closed.value
    after, closed = run(scenario())
    assert after == {"ok": True} and closed.transport


def test_tls_is_verified_against_the_system_trust_store(server_tls, clean_env):
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv:
            good = SlackWeb("xoxb-1", srv.url("localhost"))
            answers = [await good.call("auth.test") for _ in range(3)]
            await good.close()
            mismatch = SlackWeb("xoxb-1", srv.url("127.0.0.1"))    # the certificate names localhost
            with pytest.raises(WebError) as wrong_name:
                await mismatch.call("auth.test")
            await mismatch.close()
            clean_env.delenv("SSL_CERT_FILE")                      # the real store: CA unknown
            stranger = SlackWeb("xoxb-1", srv.url("localhost"))
            with pytest.raises(WebError) as unknown_ca:
                await stranger.call("auth.test")
            await stranger.close()
            return srv, answers, wrong_name.value, unknown_ca.value
    srv, answers, wrong_name, unknown_ca = run(scenario())
    assert answers == [{"ok": True}] * 3 and len(srv.peers) == 1
    assert len(srv.requests) == 3                                  # neither bad client got through
    for err in (wrong_name, unknown_ca):
        assert err.transport and "certificate" in err.error.lower()


async def _ok_soon() -> web.Response:
    return ok()


def test_https_proxy_from_the_environment_with_credentials(server_tls, clean_env):
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv, ConnectProxy() as proxy, \
                ConnectProxy(refuse="407 Proxy Authentication Required") as refusing:
            clean_env.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://b%C3%B6b:p%40ss%E2%82%AC@"))
            # a name only the proxy can reach: it tunnels every target to 127.0.0.1
            far = SlackWeb("xoxb-1", srv.url("slack.invalid"))
            answers = [await far.call("auth.test") for _ in range(3)]
            await far.close()
            clean_env.setenv("HTTPS_PROXY", refusing.url.replace("http://", "http://bob:hunter2@"))
            denied = SlackWeb("xoxb-1", srv.url("slack.invalid"))
            with pytest.raises(WebError) as refused:
                await denied.call("auth.test")
            await denied.close()
            return srv, proxy, refusing, answers, refused.value
    srv, proxy, refusing, answers, refused = run(scenario())
    assert answers == [{"ok": True}] * 3 and len(srv.peers) == 1   # one tunnel, kept alive
    assert proxy.targets == [f"CONNECT slack.invalid:{srv.port}"]
    assert proxy.auth == ["Basic " + base64.b64encode("böb:p@ss€".encode()).decode()]
    assert not any("xoxb" in head for head in proxy.heads + refusing.heads)   # the token stays inside TLS
    assert refused.transport and "407" in str(refused)
    assert "hunter2" not in str(refused) and "bob" not in str(refused)


def test_no_proxy_and_loopback_are_reached_directly(server_tls, clean_env):
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv, ConnectProxy() as proxy:
            clean_env.setenv("HTTPS_PROXY", proxy.url)
            near = SlackWeb("xoxb-1", srv.url("localhost"))       # loopback: never proxied
            await near.call("auth.test")
            await near.close()
            clean_env.setenv("NO_PROXY", "example.org,.invalid")
            direct = SlackWeb("xoxb-1", srv.url("slack.invalid"), timeout=10)  # not proxied: no such name
            with pytest.raises(WebError) as unresolved:
                await direct.call("auth.test")
            await direct.close()
            return srv, proxy, unresolved.value
    srv, proxy, unresolved = run(scenario())
    assert proxy.targets == [] and len(srv.requests) == 1
    assert unresolved.transport          # tried directly: no such name (or no resolver answer)


def test_a_proxy_reached_over_tls(server_tls, clean_env):
    """An https:// proxy gets TLS to itself, then the tunnelled TLS to Slack inside it."""
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv, ConnectProxy(tls=server_tls) as proxy:
            clean_env.setenv("HTTPS_PROXY", proxy.url)
            far = SlackWeb("xoxb-1", srv.url("slack.invalid"))
            answer = await far.call("auth.test")
            await far.close()
            ws = await open_websocket(f"wss://slack.invalid:{srv.port}/ws")
            await ws.send("hi")
            echo = await ws.recv()
            await ws.close()
            return srv, proxy, answer, echo
    srv, proxy, answer, echo = run(scenario())
    assert answer == {"ok": True} and echo == "echo hi"
    assert proxy.targets == [f"CONNECT slack.invalid:{srv.port}"] * 2


def test_websockets_follow_the_same_proxy_rule(server_tls, clean_env):
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv, ConnectProxy() as proxy:
            clean_env.setenv("HTTPS_PROXY", proxy.url)
            echoes = []
            for host in ("slack.invalid", "localhost"):            # proxied, then direct
                ws = await open_websocket(f"wss://{host}:{srv.port}/ws")
                await ws.send(host)
                echoes.append(await ws.recv())
                await ws.close()
            return srv, proxy, echoes
    srv, proxy, echoes = run(scenario())
    assert echoes == ["echo slack.invalid", "echo localhost"]
    assert proxy.targets == [f"CONNECT slack.invalid:{srv.port}"]


def test_proxy_for_names_one_rule_for_http_and_websockets(clean_env):
    clean_env.setenv("HTTPS_PROXY", "http://p.example:3128")
    clean_env.setenv("HTTP_PROXY", "http://plain.example:3128")
    clean_env.setenv("NO_PROXY", "corp.example")
    assert proxy_for("https://slack.com/api/") == "http://p.example:3128"
    assert proxy_for("wss://wss-primary.slack.com/link") == "http://p.example:3128"
    assert proxy_for("ws://relay.example/x") == "http://plain.example:3128"
    for url in ("https://api.corp.example/", "wss://127.0.0.1:9/", "https://localhost/", "http://[::1]:8/"):
        assert proxy_for(url) is None, url


def test_the_plugins_slack_sdk_client_follows_no_proxy(clean_env):
    from rtmbotd.slack.plugin_client import PluginSlackClient
    clean_env.setenv("HTTPS_PROXY", "http://p.example:3128")
    clean_env.setenv("NO_PROXY", "corp.example")
    client = PluginSlackClient()
    client.configure("xoxb-1", "https://slack.corp.example/api/")
    assert client.web.proxy is None                 # slack_sdk alone would take HTTPS_PROXY
    client.configure("xoxb-1", "https://slack.com/api/")
    assert client.web.proxy == "http://p.example:3128"


def test_proxy_written_as_urllib_reads_it_works_and_keeps_its_password(server_tls, clean_env):
    """`user:pw@host:port` (no scheme) and a password with `#` or `/` unencoded: urllib reads
    both; aiohttp refused them ("InvalidURL: http://bob:pa#ss@...", the password in the log
    and STATUS) and never connected."""
    async def scenario():
        async with Server(lambda r: _ok_soon(), tls=server_tls) as srv, ConnectProxy() as proxy:
            answers, errors = [], []
            for userinfo in ("bob:pa#ss/w?rd", "bob:50%off"):
                clean_env.setenv("HTTPS_PROXY", proxy.url.replace("http://", userinfo + "@"))   # no scheme
                far = SlackWeb("xoxb-1", srv.url("slack.invalid"), timeout=10)
                try:
                    answers.append(await far.call("auth.test"))
                except WebError as exc:
                    errors.append(str(exc))
                await far.close()
            return proxy, answers, errors
    proxy, answers, errors = run(scenario())
    assert errors == [] and answers == [{"ok": True}] * 2
    assert proxy.auth == ["Basic " + base64.b64encode(b"bob:pa#ss/w?rd").decode(),
                          "Basic " + base64.b64encode(b"bob:50%off").decode()]


def test_proxy_for_encodes_credentials_and_adds_the_scheme(clean_env):
    clean_env.setenv("HTTPS_PROXY", "bob:pa#ss@p.example:3128")
    assert proxy_for("https://slack.com/api/") == "http://bob:pa%23ss@p.example:3128"
    clean_env.setenv("HTTPS_PROXY", "https://b%C3%B6b:p%40ss@p.example")     # already encoded: unchanged
    assert proxy_for("wss://wss-primary.slack.com/link") == "https://b%C3%B6b:p%40ss@p.example"
    clean_env.setenv("HTTPS_PROXY", "p.example:3128")
    assert proxy_for("https://slack.com/api/") == "http://p.example:3128"


def test_close_lets_the_calls_in_flight_have_their_answers(clean_env):
    """A reload that changes the token closes the old client: it cut a chat.postMessage
    Slack had already posted short ("Session is closed"), the outbox sent it again, and the
    channel saw the message twice. The calls in flight finish; new ones are refused."""
    async def scenario():
        arrived = asyncio.Event()

        async def answer(request):
            arrived.set()
            await asyncio.sleep(0.3)          # posted; the answer is on its way
            return ok(ts="1.0")
        async with Server(answer) as srv:
            old = SlackWeb("xoxb-old", srv.url(), timeout=30)
            posting = asyncio.create_task(old.call("chat.postMessage", json=True, channel="C1", text="hi"))
            await arrived.wait()
            closing = asyncio.create_task(old.close())
            await asyncio.sleep(0)
            with pytest.raises(WebError, match="client closed"):
                await old.call("chat.postMessage", json=True, channel="C1", text="later")
            posted = await posting
            await closing
            return srv, posted, old
    srv, posted, old = run(scenario())
    assert posted == {"ok": True, "ts": "1.0"} and len(srv.requests) == 1
    assert old._session.closed


def test_a_retry_after_beyond_reason_is_capped(clean_env):
    """Retry-After "inf" (or 1e12) paused every chat.postMessage, or the reconnect, for good."""
    async def scenario():
        async def answer(request):
            after = request.path.rsplit("/", 1)[1]
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": after})
        async with Server(answer) as srv:
            web_ = SlackWeb("xoxb-1", srv.url())
            waits = {}
            for after in ("inf", "1e12", "nan", "-5", "30"):
                with pytest.raises(WebError) as limited:
                    await web_.call(after)
                waits[after] = limited.value.retry_after
            await web_.close()
            return waits
    assert run(scenario()) == {"inf": 3600.0, "1e12": 3600.0, "nan": None, "-5": 0.0, "30": 30.0}


def test_the_plugins_api_call_sends_form_arguments_every_method_reads(clean_env):
    """slack_client.api_call("users.info", user=...) sent a JSON body, which Slack reads on
    most write methods only (a read method saw no arguments); slackclient sent a form."""
    from urllib.parse import parse_qs

    from rtmbotd.slack.plugin_client import PluginSlackClient

    async def scenario():
        async with Server(lambda r: _ok_soon()) as srv:
            client = PluginSlackClient()
            client.configure("xoxb-1", srv.url())
            answer = await asyncio.to_thread(client.api_call, "users.info", user="U1ALICE", include_locale=True,
                                             blocks=[{"type": "divider"}], skipped=None)
            return srv, answer
    srv, answer = run(scenario())
    assert answer == {"ok": True}
    [request] = srv.requests
    assert request["path"] == "/api/users.info"
    assert request["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(request["body"].decode()) == {"user": ["U1ALICE"], "include_locale": ["true"],
                                                  "blocks": ['[{"type": "divider"}]']}

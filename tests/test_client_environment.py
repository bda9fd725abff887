"""The client reads the environment's proxy settings once per host, and still obeys them.

A shop behind an outbound proxy sets ``HTTPS_PROXY`` (and ``NO_PROXY`` for what must not go
through it); the client keeps what requests derives from them instead of reading the whole
environment on every call, so these prove the settings still take effect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from django_zinrelo.client import Outcome, ZinreloClient

ANSWER = b'{"success": true, "data": {"id": "t-1", "points": 10}}'


@contextmanager
def listener() -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering every POST as Zinrelo accepts an award; the request
    targets it received (absolute when it was used as a proxy)."""
    targets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            targets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", targets
    finally:
        server.shutdown()
        server.server_close()


def client() -> ZinreloClient:
    return ZinreloClient(partner_id="p", api_key="k", connect_timeout=1, read_timeout=1)


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_calls_go_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://zinrelo.invalid/v2/loyalty/transactions/award"
    with listener() as (proxy, targets):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        calling = client()
        replies = [calling.award(url, "{}") for _ in range(2)]
    assert [reply.outcome for reply in replies] == [Outcome.AWARDED] * 2
    assert targets == [url, url], "both calls sent to the proxy, in absolute form"


def test_no_proxy_still_sends_straight_to_its_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    with listener() as (proxy, through_proxy), listener() as (zinrelo, direct):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        reply = client().award(f"{zinrelo}/v2/loyalty/transactions/award", "{}")
    assert reply.outcome is Outcome.AWARDED
    assert (through_proxy, direct) == ([], ["/v2/loyalty/transactions/award"])

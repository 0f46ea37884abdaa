"""pytest fixtures for plugin authors (installed as a pytest plugin with rtmbotd).

    import pytest

    @pytest.mark.rtmbot(plugins=["plugins/repeat"])
    def test_repeat(rtmbot):
        assert rtmbot.say("hi") == ['from repeat1 "hi" in channel D1ALICE']

Marker options: plugins (folders), base_path, mode ("rtm" | "socket_mode"), settings.
Without a marker the bot loads ./plugins (the current folder as BASE_PATH).
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rtmbot(plugins=None, base_path=None, mode='rtm', settings=None): "
                                       "configure the rtmbot fixture")


@pytest.fixture
def fake_slack():
    """A running FakeSlack on 127.0.0.1."""
    from rtmbotd.testing.fakeslack import FakeSlack
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def rtmbot(fake_slack, request, tmp_path):
    """The real rtmbotd engine connected to `fake_slack`, running the marked plugins."""
    from rtmbotd.testing.bot import TestBot
    marker = request.node.get_closest_marker("rtmbot")
    opts = dict(marker.kwargs) if marker else {}
    if not opts.get("plugins") and not opts.get("base_path"):
        opts["base_path"] = os.getcwd()
    bot = TestBot(fake_slack, workdir=str(tmp_path), **opts)
    with bot:
        yield bot

"""The STATUS= line: what it says, and that it quotes other texts unchanged (issue 11, item 12)."""
from pathlib import Path

from rtmbotd.config import Config
from rtmbotd.runtime.host import PluginHost
from rtmbotd.status import check_every, sentence, status_line

CONFIG = Config(path=Path("/etc/rtmbot/rtmbot.conf"), base_path=Path("/x"), slack_token="xoxb-1")


def host() -> PluginHost:
    return PluginHost(lambda item: None, lambda: 0.0)


def test_a_connection_error_keeps_its_case():
    problem = "cannot connect (auth.test: ClientConnectorError: Cannot connect to host 127.0.0.1:9); retrying in 2 s"
    line = status_line(CONFIG, host(), 0.0, connection=problem, queued=3)
    assert line == ("Cannot connect (auth.test: ClientConnectorError: Cannot connect to host 127.0.0.1:9); "
                    "retrying in 2 s; generation 0; 0 plugin(s) loaded; 3 message(s) queued")


def test_connected_and_no_token():
    assert status_line(CONFIG, host(), 0.0, connection="connected (socket_mode)").startswith("Connected (socket_mode); ")
    no_token = Config(path=Path("/etc/rtmbot/My Bot.conf"), base_path=Path("/x"))
    assert status_line(no_token, host(), 0.0, connection="not connected") == (
        "No Slack token: set SLACK_TOKEN in /etc/rtmbot/My Bot.conf, then systemctl reload rtmbotd")


def test_sentence_raises_only_the_first_letter():
    assert sentence("reconnecting in 1 s (closed by Slack (code 1011, Server Error))") == \
        "Reconnecting in 1 s (closed by Slack (code 1011, Server Error))"
    assert sentence("") == ""


def test_stuck_plugins_are_looked_for_at_half_the_timeout_within_bounds():
    assert check_every(30.0) == 5.0
    assert check_every(3.0) == 1.5
    assert check_every(0.1) == 0.5


def test_a_store_problem_follows_the_connection_and_hung_imports_come_last():
    line = status_line(CONFIG, host(), 0.0, connection="connected (rtm)",
                       store="Store unreachable (PostgreSQL at db:5432); retrying", hung=2)
    assert line.startswith("Connected (rtm); Store unreachable (PostgreSQL at db:5432); retrying; generation 0")
    assert line.endswith("; 2 import(s) hung")

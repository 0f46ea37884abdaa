"""Building a generation on its thread: whatever goes wrong, exactly one Built is posted."""
import queue

import pytest

import rtmbotd.runtime.generation as generation
from rtmbotd.runtime.generation import Built, build_generation
from rtmbotd.runtime.loader import PluginEnv
from rtmbotd.testing.waiting import wait_until


def build(path, monkeypatch=None, **patches):
    for name, fake in patches.items():
        monkeypatch.setattr(generation, name, fake)
    inbox = queue.SimpleQueue()
    build_generation(path, {}, PluginEnv(), None, inbox.put)
    built = wait_until(lambda: None if inbox.empty() else inbox.get(), timeout=30, what="a Built")
    assert isinstance(built, Built)
    return built


def raises(exc):
    def fake(*args, **kwargs):
        raise exc
    return fake


@pytest.mark.parametrize("exc", [RecursionError("maximum recursion depth exceeded"),
                                 ValueError("embedded null byte\nsecond line"), MemoryError(),
                                 SystemExit(3)])
def test_an_unexpected_error_in_load_config_rejects_the_generation(tmp_path, monkeypatch, exc):
    built = build(tmp_path / "rtmbot.conf", monkeypatch, load_config=raises(exc))
    assert built.config is None and built.plugins is None
    assert type(exc).__name__ in built.error and "\n" not in built.error


def test_an_error_building_plugins_rejects_the_generation_in_one_redacted_line(tmp_path, monkeypatch):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-1\n")
    built = build(conf, monkeypatch, build_plugin_set=raises(OSError("no way with xoxb-PW1\nsecond line")))
    assert built.error == "plugins: OSError: no way with xoxb-[redacted]" and built.plugins is None


def test_a_bad_config_is_a_rejected_generation(tmp_path):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("X: " + "[" * 10000 + "]" * 10000 + "\n")
    built = build(conf)
    assert "nested deeper than 64 levels" in built.error

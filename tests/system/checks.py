"""Print each system-test check and its result, even while pytest captures output."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

_config: Any = None


def configure(config: Any) -> None:
    """Called from conftest's pytest_configure with pytest's config."""
    global _config
    _config = config


@contextlib.contextmanager
def _uncaptured() -> Iterator[None]:
    capman = _config.pluginmanager.getplugin("capturemanager") if _config else None
    if capman is None:
        yield
    else:
        with capman.global_and_fixture_disabled():
            yield


def say(text: str) -> None:
    with _uncaptured():
        print(text, flush=True)


def step(what: str) -> None:
    say(f"  - {what}")


def expect(ok: Any, what: str, detail: str = "") -> None:
    """Print one check and its result; fail the test when it does not hold."""
    line = what + (f": {detail}" if detail else "")
    say(f"    [{'ok' if ok else 'FAIL'}] {line}")
    assert ok, line

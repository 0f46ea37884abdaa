"""The daemon's store when its database server cannot be reached at start: a
RetryingStore that raises StoreUnavailableError, says why, and opens the real store
in the background with backoff."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from rtmbotd.errors import StoreError
from rtmbotd.slack.backoff import Backoff
from rtmbotd.store import Store, StoreUnavailableError, StoreUnreachableError
from rtmbotd.store.lazy import RetryingStore, open_daemon_store
from rtmbotd.testing.waiting import wait_until
from tests.test_store import free_port

WHERE = "postgresql://rtm@db.example:5432/rtmbot"


def fast() -> Backoff:
    return Backoff(base=0.01, cap=0.05)


class Opener:
    """Fails with StoreUnreachableError until `up` is set, then opens an SQLite store."""

    def __init__(self, tmp_path: Path, error: Exception | None = None) -> None:
        self.url = f"sqlite:///{tmp_path}/store.sqlite"
        self.error = error or StoreUnreachableError(WHERE, "connection refused")
        self.up = threading.Event()
        self.calls = 0
        self.opened: list[Store] = []

    def __call__(self) -> Store:
        self.calls += 1
        if not self.up.is_set():
            raise self.error
        store = Store.open(self.url)
        self.opened.append(store)
        return store


@pytest.fixture
def retrying(tmp_path: Path):  # noqa: ANN201
    made: list[RetryingStore] = []

    def make(opener: Callable[[], Any], backoff: Backoff | None = None) -> RetryingStore:
        store = RetryingStore(opener, StoreUnreachableError(WHERE, "connection refused"), backoff or fast())
        made.append(store)
        return store
    yield make
    for store in made:
        store.close()


def test_calls_fail_until_the_database_can_be_reached(tmp_path: Path, retrying) -> None:  # noqa: ANN001
    opener = Opener(tmp_path)
    store = retrying(opener)
    ps = store.plugin("counter")
    assert store.problem == f"store unreachable ({WHERE}: connection refused), retrying"
    assert "password" not in store.problem
    with pytest.raises(StoreUnavailableError, match="connection refused.*retrying"):
        ps.incr("seen")
    with pytest.raises(StoreUnavailableError):
        ps.get("seen")
    assert "unreachable" in repr(ps)
    wait_until(lambda: opener.calls >= 3, timeout=20, what="retries")
    assert store.problem is not None and not store.opened
    opener.up.set()
    wait_until(lambda: store.problem is None, timeout=20, what="the store to open")
    assert ps.incr("seen") == 1 and store.plugin("counter") is ps
    calls = opener.calls
    assert len(opener.opened) == 1
    with Store.open(opener.url) as other:                     # it is the real database
        assert other.plugin("counter")["seen"] == 1
    assert opener.calls == calls                               # no retries once open


def test_a_refused_login_says_what_to_fix(tmp_path: Path) -> None:
    opener = Opener(tmp_path)
    error = StoreUnreachableError(WHERE, 'password authentication failed for user "rtm"', password_involved=True)
    with RetryingStore(opener, error, fast()) as store:
        assert store.problem is not None
        assert "password in STORE_URL" in store.problem and "restart" in store.problem
        assert store.problem.endswith("retrying")


def test_a_store_reachable_but_unusable_is_reported(tmp_path: Path, retrying) -> None:  # noqa: ANN001
    opener = Opener(tmp_path, StoreError(f"{WHERE}: permission denied for schema public"))
    store = retrying(opener)
    wait_until(lambda: "permission denied" in (store.problem or ""), timeout=20, what="the new problem")
    assert store.problem.startswith("store unusable") and "restart" in store.problem


def test_an_unexpected_failure_does_not_end_the_retries(tmp_path: Path, retrying) -> None:  # noqa: ANN001
    opener = Opener(tmp_path, RuntimeError("driver bug"))
    store = retrying(opener)
    wait_until(lambda: "driver bug" in (store.problem or ""), timeout=20, what="the new problem")
    opener.up.set()
    wait_until(lambda: store.opened, timeout=20, what="the store to open")
    wait_until(lambda: not store._thread.is_alive(), timeout=20, what="the retry thread to end")
    assert store.problem is None


def test_close_stops_the_retries(tmp_path: Path, retrying) -> None:  # noqa: ANN001
    opener = Opener(tmp_path)
    store = retrying(opener)
    store.close()
    wait_until(lambda: not store._thread.is_alive(), timeout=20, what="the retry thread to end")
    opener.up.set()
    with pytest.raises(StoreError, match="closed"):
        store.plugin("p")["k"] = 1
    assert opener.opened == [] and store.problem is None


def test_last_runs_saved_outbox_is_read_once_the_store_opens(tmp_path: Path, retrying) -> None:  # noqa: ANN001
    opener = Opener(tmp_path)
    with Store.open(opener.url) as first:
        first.save_outbox([{"channel": "C1", "text": "saved by the last run"}])
    store = retrying(opener)
    with pytest.raises(StoreUnavailableError):
        store.outbox_rows()                           # unreadable at start: the journal's writer retries
    with pytest.raises(StoreUnavailableError):
        store.write_outbox([(2**60, "C2", '{"channel": "C2", "text": "new"}')], [])
    opener.up.set()
    wait_until(lambda: store.opened, timeout=20, what="the store to open")
    [(seq, record)] = store.outbox_rows()
    assert record == {"channel": "C1", "text": "saved by the last run"}
    store.write_outbox([(seq + 1, "C2", '{"channel": "C2", "text": "new"}')], [seq])
    with Store.open(opener.url) as check:
        assert check.load_outbox() == [{"channel": "C2", "text": "new"}]


def test_open_daemon_store_waits_only_for_a_server_it_cannot_reach(tmp_path: Path) -> None:
    url = f"postgresql://rtm:s3cret-pw@127.0.0.1:{free_port()}/rtmbot"
    store = open_daemon_store(url, tmp_path, backoff=Backoff(base=30, cap=60))
    try:
        assert isinstance(store, RetryingStore)
        assert store.problem.startswith("store unreachable (postgresql") and "rtm@127.0.0.1:" in store.problem
        assert "s3cret" not in store.problem
    finally:
        store.close()
    for bad, why in (("nonsense", "not an SQLAlchemy URL"), ("mysql://u@h/db", "unsupported"),
                     ("postgresql+nosuchdriver://u@127.0.0.1/db", "driver")):
        with pytest.raises(StoreError, match=why) as info:
            open_daemon_store(bad, tmp_path)
        assert not isinstance(info.value, StoreUnavailableError)

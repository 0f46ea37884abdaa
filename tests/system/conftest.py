"""Gate for the system tests: they need root, systemd-nspawn, mmdebstrap and dh-virtualenv.

They run only with RTMBOTD_SYSTEM_TESTS=1, which tests/system/run sets, and are skipped
otherwise, so `pytest tests` stays quick. Once asked for, a missing tool is an error.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import checks  # noqa: E402  (beside this file, whatever pytest's import mode)

TOOLS = ("systemd-nspawn", "nsenter", "mmdebstrap", "dpkg-buildpackage", "dh_virtualenv",
         "lintian", "systemd-analyze")


def pytest_configure(config: pytest.Config) -> None:
    checks.configure(config)


def _gate() -> str | None:
    """Why the system tests are skipped here, or None to run them."""
    if os.environ.get("RTMBOTD_SYSTEM_TESTS") != "1":
        return "system tests run with tests/system/run (or RTMBOTD_SYSTEM_TESTS=1)"
    if os.geteuid() != 0:
        return "system tests need root (mmdebstrap, systemd-nspawn)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    mine = [item for item in items if str(item.fspath).startswith(here)]
    reason = _gate()
    for item in mine:
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif config.pluginmanager.hasplugin("timeout"):
            # pytest-timeout counts the .deb build and the rootfs in the first test
            item.add_marker(pytest.mark.timeout(900))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _system_tools(request: pytest.FixtureRequest) -> None:
    if _gate():
        return
    # A timeout's SIGTERM becomes an interrupt: pytest still tears the container down.
    signal.signal(signal.SIGTERM, _interrupt)
    missing = [tool for tool in TOOLS
               if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/install-system-test-deps",
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)

"""Gate for the system tests: they need root, systemd-nspawn, mmdebstrap and dh-virtualenv.

They run only with RTMBOTD_SYSTEM_TESTS=1, which tests/system/run sets, and are skipped
otherwise, so `pytest tests` stays quick. Once asked for, a missing tool is an error.
The fixtures every module shares: the .deb (built once per session), the staging folder
the containers read it from, the cached rootfs, and a fake Slack per module.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import checks  # noqa: E402  (beside this file, whatever pytest's import mode)
import nspawn  # noqa: E402
from checks import say  # noqa: E402
from service import BASE_PACKAGES, REPO, FakeSlackProcess  # noqa: E402

HERE = Path(__file__).resolve().parent

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


# -- fixtures shared by the modules ------------------------------------------------------------


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb: RTMBOTD_DEB if given (a quicker local loop), else built by packaging/build-deb."""
    given = os.environ.get("RTMBOTD_DEB")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    proc = nspawn.run_host([str(REPO / "packaging/build-deb"), str(out)], timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"packaging/build-deb failed ({proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    debs = sorted(out.glob("rtmbotd_*.deb"))
    assert len(debs) == 1, debs
    say(f"\n  built {debs[0].name} in {time.monotonic() - started:.0f}s")
    return debs[0]


@pytest.fixture(scope="session")
def stage(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the container reads through a read-only bind: the .deb and the test plugins."""
    path = tmp_path_factory.mktemp("stage")
    path.chmod(0o755)  # apt's _apt user reads the .deb from here
    shutil.copy2(deb, path / "rtmbotd.deb")
    shutil.copytree(HERE / "plugins", path / "plugins")
    return path


@pytest.fixture(scope="session")
def rootfs(deb: Path) -> Path:
    """The cached bookworm tree with what the .deb depends on (built once, then reused)."""
    started = time.monotonic()
    root = nspawn.build_rootfs(BASE_PACKAGES + nspawn.deb_depends(deb))
    say(f"\n  rootfs {root} ready in {time.monotonic() - started:.0f}s")
    return root


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    try:
        process = FakeSlackProcess()
    except Exception as exc:  # the fake is daemon code, still being written
        pytest.fail(f"fake Slack unavailable: {exc}", pytrace=False)
    try:
        yield process.client
    finally:
        process.stop()

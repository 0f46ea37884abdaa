"""A store whose PostgreSQL server is down at start: the real daemon starts, says so in
STATUS, plugins get StoreError, and the store works once the server comes up."""
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import REPO, Rtmbotd, clean_env, rtmbotd_command, wait_until
from tests.test_store import free_port

PG_SCRIPT = REPO / "scripts" / "postgres-test-server"

COUNTER = '''
outputs = []
def process_message(data):
    try:
        n = store.incr("seen")
    except Exception as exc:
        outputs.append([data["channel"], "store error %s" % type(exc).__name__])
        raise
    outputs.append([data["channel"], "seen %d" % n])
'''


@pytest.fixture
def late_postgres():
    """A private PostgreSQL server on a free port, initialised but not running yet:
    yields (url, port, start)."""
    port = free_port()
    root = tempfile.mkdtemp(prefix="rtmbotd-late-pg-")      # under /tmp: the postgres user reaches it
    env = {**os.environ, "RTMBOTD_PG_PORT": str(port), "RTMBOTD_PG_DIR": root}

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(PG_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=900)
    done = script()                        # initdb, start, create the test database ...
    url = (done.stdout.strip().splitlines() or [""])[-1].partition("=")[2]
    if done.returncode != 0 or not url:
        shutil.rmtree(root, ignore_errors=True)
        if os.environ.get("RTMBOTD_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL unavailable and RTMBOTD_ALLOW_NO_POSTGRES=1: {done.stderr[-2000:]}")
        pytest.fail(f"cannot start PostgreSQL: {done.stderr[-2000:]}", pytrace=False)
    script("stop")                         # ... and stop it: nothing listens on the port now
    try:
        yield url, port, script
    finally:
        script("stop")
        shutil.rmtree(root, ignore_errors=True)
        Path(f"{root}.lock").unlink(missing_ok=True)


def test_a_store_down_at_start_is_waited_for(tmp_path, fake, late_postgres):
    url, port, start_postgres = late_postgres
    bot = Rtmbotd(tmp_path, fake, plugins={"counter": COUNTER}, settings={"STORE_URL": url})
    try:
        bot.start()                                          # READY=1 and connected, store or not
        assert bot.proc.poll() is None
        assert "store unreachable" in bot.notify.statuses()[-1] and f"127.0.0.1:{port}" in bot.notify.statuses()[-1]
        assert "retrying in the background" in bot.log()
        assert bot.say("count") == ["store error StoreUnavailableError"]
        bot.wait_log(r"plugin counter\S*: .*raised")         # logged as the plugin's error; the daemon runs on
        assert bot.say("count again") == ["store error StoreUnavailableError"]

        assert start_postgres().returncode == 0
        bot.wait_log("the database can be reached now", timeout=120)   # backoff: 1, 2, 4 ... 60 s
        seen = len(bot.notify.statuses())
        wait_until(lambda: len(bot.notify.statuses()) > seen, timeout=30, what="a STATUS refresh")
        assert "store" not in bot.notify.statuses()[-1].lower()
        assert bot.say("count") == ["seen 1"]
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit() == 0
    finally:
        bot.stop()


def check_config(tmp_path: Path, store_url: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "rtmbot.conf"
    (tmp_path / "plugins").mkdir(exist_ok=True)
    conf.write_text(yaml.safe_dump({"SLACK_TOKEN": "xoxb-check", "STORE_URL": store_url}))
    return subprocess.run(rtmbotd_command() + ["-c", str(conf), "--check-config"], env=clean_env(),
                          capture_output=True, text=True, timeout=120)


def test_check_config_warns_of_an_unreachable_store_and_refuses_one_that_cannot_work(tmp_path):
    down = check_config(tmp_path, f"postgresql://rtm:s3cret-pw@127.0.0.1:{free_port()}/rtmbot")
    assert down.returncode == 0 and "OK" in down.stdout, down.stderr
    warning = [line for line in down.stderr.splitlines() if line.startswith("rtmbotd: warning: store unreachable")]
    assert len(warning) == 1 and "retries" in warning[0], down.stderr
    assert "s3cret" not in down.stdout + down.stderr and "Traceback" not in down.stderr
    for url, why in (("nonsense", "not an SQLAlchemy URL"), ("postgresql+nosuchdriver://u@127.0.0.1/db", "driver")):
        bad = check_config(tmp_path, url)
        assert bad.returncode == 78 and why in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_a_store_url_that_cannot_work_still_stops_the_start(tmp_path, fake):
    bot = Rtmbotd(tmp_path, fake, settings={"STORE_URL": "postgresql+nosuchdriver://u@127.0.0.1/db"})
    try:
        bot.start(wait_ready=False, wait_connected=False)
        assert bot.wait_exit(timeout=60) == 78
        assert "driver" in bot.log() and "Traceback" not in bot.log()
    finally:
        bot.stop()

"""The daemon's state machine: every change is checked in one place."""
from pathlib import Path

import pytest

from rtmbotd.config import Config
from rtmbotd.daemon import Daemon, State, StateError

ALLOWED = {(State.STARTING, State.RUNNING), (State.STARTING, State.STOPPING),
           (State.RUNNING, State.RELOADING), (State.RUNNING, State.STOPPING),
           (State.RELOADING, State.RUNNING), (State.RELOADING, State.STOPPING),
           (State.STOPPING, State.STOPPED)}


def test_only_the_documented_transitions_are_allowed():
    assert {(a, b) for a in State for b in State if a.can_become(b)} == ALLOWED


def test_set_state_refuses_a_transition_outside_the_machine():
    daemon = Daemon(Config(path=Path("/x/rtmbot.conf"), base_path=Path("/x")), install_signals=False)
    assert daemon.state is State.STARTING
    with pytest.raises(StateError):
        daemon._set_state(State.RELOADING)        # no reload before the first generation runs
    for new in (State.RUNNING, State.RELOADING, State.RUNNING, State.STOPPING, State.STOPPED):
        daemon._set_state(new)
    with pytest.raises(StateError):
        daemon._set_state(State.RUNNING)          # nothing comes after STOPPED
    assert daemon.state is State.STOPPED
    with pytest.raises(AttributeError):
        daemon.state = State.RUNNING              # only through _set_state


def test_a_reload_plans_cron_jobs_again_in_the_new_timezone(tmp_path):
    import asyncio
    import signal
    import threading
    from datetime import datetime

    import yaml

    from rtmbotd.config import load_config
    from rtmbotd.daemon import Daemon
    from rtmbotd.testing.fakeslack import FakeSlack
    from rtmbotd.testing.waiting import wait_until

    plugin = tmp_path / "plugins" / "daily"
    plugin.mkdir(parents=True)
    (plugin / "daily.py").write_text("crontable = [['0 9 * * *', 'f']]\ndef f():\n    pass\n")
    conf = tmp_path / "rtmbot.conf"
    with FakeSlack() as fake:
        settings = {"SLACK_TOKEN": "xoxb-test", "SLACK_API_URL": fake.url, "TIMEZONE": "Europe/Berlin",
                    "STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}"}
        conf.write_text(yaml.safe_dump(settings))
        daemon = Daemon(load_config(conf, env={}), install_signals=False)
        thread = threading.Thread(target=lambda: asyncio.run(daemon.run()), daemon=True)
        thread.start()
        try:
            wait_until(lambda: daemon.host is not None and len(daemon.host.scheduler) == 1, 60, "the cron job")
            assert str(daemon.host.scheduler.zone) == "Europe/Berlin"
            settings["TIMEZONE"] = "America/New_York"
            conf.write_text(yaml.safe_dump(settings))
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: str(daemon.host.scheduler.zone) == "America/New_York", 60, "the new zone")
            entry = next(iter(daemon.host.scheduler._entries.values()))
            assert datetime.fromtimestamp(entry.slot, daemon.host.scheduler.zone).strftime("%H:%M") == "09:00"
        finally:
            daemon.send_signal(signal.SIGTERM)
            thread.join(30)

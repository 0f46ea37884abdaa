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

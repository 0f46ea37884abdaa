"""Kept for plugin authors' tests: `from rtmbotd.testing.fake_slack import FakeSlack`.

The fake lives in `rtmbotd.testing.fakeslack`.
"""
from rtmbotd.testing.fakeslack import ControlError, FakeSlack, FakeSlackClient

__all__ = ["ControlError", "FakeSlack", "FakeSlackClient"]

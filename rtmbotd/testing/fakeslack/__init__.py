"""A fake Slack on loopback: Web API, RTM and Socket Mode websockets, and controls for tests.

- `server`: `FakeSlack`, the server on its own thread and loop, driven in-process
- `remote`: the /_control HTTP routes and `FakeSlackClient`, for a fake in another process
- `controls`: the registry of controls and read-backs both of them offer
- `hub`: websockets, event delivery and acks; `webapi`: /api/<method>
- `workspace`: team, users, channels; `journal`: what happened; `ratelimit`: Slack's limit
"""
from rtmbotd.testing.fakeslack.remote import ControlError, FakeSlackClient
from rtmbotd.testing.fakeslack.server import FakeSlack

__all__ = ["ControlError", "FakeSlack", "FakeSlackClient"]

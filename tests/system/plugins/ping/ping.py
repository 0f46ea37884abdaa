"""System-test plugin (class style, python-rtmbot 0.4): answers `ping` with `pong`."""
from rtmbot.core import Plugin


class PingPlugin(Plugin):
    def process_message(self, data):
        if (data.get("text") or "").strip() == "ping":
            self.outputs.append([data["channel"], "pong"])

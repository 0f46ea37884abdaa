"""System-test plugin (class style, python-rtmbot 0.4): `ping X` -> `pong X`."""
from rtmbot.core import Plugin


class PingPlugin(Plugin):
    def process_message(self, data):
        text = (data.get("text") or "").strip()
        if text == "ping" or text.startswith("ping "):
            self.outputs.append([data["channel"], "pong" + text[4:]])

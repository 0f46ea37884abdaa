"""A crontable example: posts to `heartbeat: {channel: ...}` every `interval` seconds.

Quiet unless the config file has a section like

    heartbeat:
      channel: "#ops"
      interval: 3600
"""
outputs = []
crontable = []

# `config` is this plugin's section of rtmbot.conf, provided by rtmbotd.
settings = globals().get("config") or {}
beats = 0


def beat():
    global beats
    beats += 1
    outputs.append([settings["channel"], "heartbeat #{}: still here".format(beats)])


if settings.get("channel"):
    crontable.append([settings.get("interval", 3600), "beat"])

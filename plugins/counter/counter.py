"""Counts messages per channel in the persistent store; `count` shows the number.

`store` is provided by rtmbotd: a dict-like per-plugin store that survives restarts.
"""
outputs = []


def process_message(data):
    channel = data.get("channel")
    text = (data.get("text") or "").strip()
    if not channel:
        return
    if text == "count":
        seen = store.get("seen:" + channel, 0)
        outputs.append([channel, "{} message(s) seen in this channel".format(seen)])
        return
    store.incr("seen:" + channel)

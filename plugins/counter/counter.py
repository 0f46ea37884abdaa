"""Counts messages per channel; `count` shows the number."""
outputs = []

counts = {}


def process_message(data):
    channel = data.get("channel")
    text = (data.get("text") or "").strip()
    if not channel:
        return
    if text == "count":
        outputs.append([channel, "{} message(s) seen in this channel".format(counts.get(channel, 0))])
        return
    counts[channel] = counts.get(channel, 0) + 1

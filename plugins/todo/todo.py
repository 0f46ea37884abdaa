"""A to-do list per DM: `todo <task>`, `tasks`, `done <n>`, `fin`."""
outputs = []

tasks = {}


def process_message(data):
    channel = data.get("channel", "")
    text = (data.get("text") or "").strip()
    if not channel.startswith("D"):
        return
    mine = tasks.setdefault(channel, [])
    if text.startswith("todo "):
        mine.append(text[5:].strip())
        outputs.append([channel, "added"])
    elif text == "tasks":
        listing = "\n".join("{}) {}".format(i, t) for i, t in enumerate(mine, 1))
        outputs.append([channel, listing or "nothing to do"])
    elif text.startswith("done "):
        try:
            mine.pop(int(text.split()[1]) - 1)
            outputs.append([channel, "done"])
        except (ValueError, IndexError):
            outputs.append([channel, "no such task"])
    elif text == "fin":
        mine.clear()
        outputs.append([channel, "all clear"])

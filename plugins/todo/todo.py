"""A to-do list per DM, kept in the store (it survives restarts): `todo <task>`, `tasks`,
`done <n>`, `fin`. A new task also gets a :memo: reaction on the message that added it.

`store` is provided by rtmbotd: a dict-like per-plugin store of JSON values.
"""
outputs = []


def _tasks(channel):
    return "tasks:" + channel


def process_message(data):
    channel = data.get("channel", "")
    text = (data.get("text") or "").strip()
    if not channel.startswith("D"):
        return
    key = _tasks(channel)
    if text.startswith("todo "):
        with store.transaction() as tx:          # read, change and write as one
            tx[key] = tx.get(key, []) + [text[5:].strip()]
        outputs.append([channel, "added"])
        if data.get("ts"):
            outputs.append({"method": "reactions.add", "channel": channel, "timestamp": data["ts"],
                            "name": "memo"})
    elif text == "tasks":
        listing = "\n".join("{}) {}".format(i, t) for i, t in enumerate(store.get(key, []), 1))
        outputs.append([channel, listing or "nothing to do"])
    elif text.startswith("done "):
        with store.transaction() as tx:
            mine = tx.get(key, [])
            try:
                n = int(text.split()[1])
                if n < 1:                  # mine[-1] is a task too: 0 would finish the last one
                    raise IndexError(n)
                mine.pop(n - 1)
            except (ValueError, IndexError):
                answer = "no such task"
            else:
                tx[key] = mine
                answer = "done"
        outputs.append([channel, answer])
    elif text == "fin":
        store.pop(key, None)
        outputs.append([channel, "all clear"])

"""System-test plugin (module style), added by a reload: `echo X` -> `echoed: X`."""
outputs = []


def process_message(data):
    text = (data.get("text") or "").strip()
    if text.startswith("echo "):
        outputs.append([data["channel"], "echoed: " + text[5:]])

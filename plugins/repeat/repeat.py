"""The seed's example: repeat what is said in a direct message."""
crontable = []
outputs = []


def process_message(data):
    if data.get("channel", "").startswith("D") and "text" in data:
        outputs.append([data["channel"], 'from repeat1 "{}" in channel {}'.format(data["text"], data["channel"])])

"""Who is on call: posted every weekday at 9:00, and asked with `oncall` in a channel.

Quiet unless the config file has a section like

    oncall:
      channel: "#ops"
      people: ["alice", "bob", "carol"]     # one a week, in turn (ISO week number)

`oncall` in any channel is answered in the message's thread, acknowledge-then-edit: the
first reply says it is looking, and once Slack gave that reply's `ts` (to
`process_output_result`) it is edited to the answer.
"""
import datetime

outputs = []
crontable = []

# `config` is this plugin's section of rtmbot.conf, provided by rtmbotd.
settings = globals().get("config") or {}


def on_call(day=None):
    """The person on call on `day` (today by default), or None without a rota."""
    people = settings.get("people") or []
    if not people:
        return None
    day = day or datetime.date.today()
    return people[day.isocalendar()[1] % len(people)]


def post_oncall():
    person = on_call()
    if person:
        outputs.append([settings["channel"], "On call this week: @{}".format(person)])


def process_message(data):
    if (data.get("text") or "").strip() != "oncall" or not data.get("ts"):
        return
    outputs.append({"channel": data["channel"], "text": "looking up who is on call…",
                    "thread_ts": data.get("thread_ts") or data["ts"], "callback": "answer"})


def process_output_result(result):
    if result["callback"] != "answer" or not result["ok"]:
        return
    person = on_call()
    posted = result["response"]
    outputs.append({"method": "chat.update", "channel": posted["channel"], "ts": posted["ts"],
                    "text": "On call this week: @{}".format(person) if person else "nobody is on call"})


if settings.get("channel"):
    # A cron expression: 9:00 Monday to Friday, in TIMEZONE (the system's by default).
    crontable.append(["0 9 * * MON-FRI", "post_oncall"])

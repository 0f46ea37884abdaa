"""The durable outbox under SIGKILL: messages that waited survive, in order, sent twice
only from the in-flight window (issue 11, items 1, 2, 5 and 7)."""
from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from rtmbotd.store import Store
from tests.e2e.harness import Rtmbotd, wait_until
from tests.e2e.test_store_down_e2e import late_postgres  # noqa: F401  (fixture)
from tests.test_store import pg_schema_url, postgres_url  # noqa: F401  (fixtures)

KILLS = 32
CHANNELS = ("C1GENERAL", "D1ALICE")

# Produces numbered messages (alternating channels) every 50 ms; before each output it
# appends "n monotonic-time" to produced.log (O_APPEND, no fsync: SIGKILL keeps the page
# cache), so the test knows what was produced when. The numbers go on across restarts.
NUMBERED = '''
import os, time
outputs = []
crontable = [[0.05, "tick"]]
LOG = {log!r}
QUIET = {quiet!r}
CHANNELS = {channels!r}
with open(LOG, "a+") as f:
    f.seek(0)
    lines = f.read().split("\\n")
n = max([int(line.split()[0]) for line in lines if line.strip()] or [0])
def tick():
    global n
    if os.path.exists(QUIET):
        return
    n += 1
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, ("%d %.6f\\n" % (n, time.monotonic())).encode())
    os.close(fd)
    outputs.append([CHANNELS[n % len(CHANNELS)], "n %d" % n])
'''


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return request.getfixturevalue("pg_schema_url")


def numbers(msgs: list[dict]) -> list[int]:
    return [int(m["text"].split()[1]) for m in msgs if m["text"].startswith("n ")]


def assert_in_order_per_channel(msgs: list[dict]) -> None:
    for channel in CHANNELS:
        first_seen = list(dict.fromkeys(numbers([m for m in msgs if m["channel"] == channel])))
        assert first_seen == sorted(first_seen), f"{channel}: out of order: {first_seen}"


def rows_left(url: str) -> int:
    with Store.open(url) as store:
        return len(store.load_outbox())


def kill_once_saved(bot: Rtmbotd, flag: Path, n: int, *, web_down: bool = False) -> None:
    """Start `bot`, cut its link to Slack (and the Web API), touch `flag` (its plugin then
    produces `n` messages), and SIGKILL it once all `n` are in the store."""
    url = bot.settings["STORE_URL"]
    try:
        bot.start()
        bot.fake.refuse_connections(10**6)
        bot.fake.set_web_api_down(web_down)
        bot.fake.drop_connections()
        bot.wait_log("Slack connection lost")
        flag.touch()
        wait_until(lambda: rows_left(url) == n, 60, f"all {n} in the store")
        bot.proc.send_signal(signal.SIGKILL)
        bot.proc.wait(20)
    finally:
        bot.stop()


def test_messages_queued_during_an_outage_survive_repeated_sigkill(tmp_path: Path, fake, store_url: str) -> None:
    """41 SIGKILLs during an outage used to lose 532 of 532 queued messages."""
    rng = random.Random(11)
    log, quiet = tmp_path / "produced.log", tmp_path / "quiet"
    plugin = NUMBERED.format(log=str(log), quiet=str(quiet), channels=CHANNELS)
    fake.refuse_connections(10**6)                      # Slack is down for every round
    kills: list[float] = []
    for round_ in range(KILLS):
        bot = Rtmbotd(tmp_path, fake, plugins={"numbered": plugin}, notify=False,
                      settings={"STORE_URL": store_url})
        try:
            ready = bot.log().count("ready: generation 1")
            bot.start(wait_ready=False, wait_connected=False)
            if round_ % 4 == 0:                         # while it starts and reads the saved rows
                time.sleep(rng.uniform(0.0, 1.5))
            else:                                       # while it produces; one in four long enough
                bot.wait_log("ready: generation 1", timeout=60, count=ready + 1)
                time.sleep(rng.uniform(1.5, 3.0) if round_ % 4 == 3 else rng.uniform(0.0, 1.5))
            bot.proc.send_signal(signal.SIGKILL)
            kills.append(time.monotonic())
            assert bot.proc.wait(20) == -signal.SIGKILL
        finally:
            bot.stop()
    assert fake.sent_messages() == []
    produced = [(int(n), float(t)) for n, t in (line.split() for line in log.read_text().splitlines())]
    assert len(produced) > 100, "the plugin should have produced messages before the kills"
    # The bound: a message produced at least 1 s before the kill that ended its run.
    waited = {n for n, t in produced if t <= min(k for k in kills if k >= t) - 1.0}

    quiet.touch()
    fake.refuse_connections(0)                          # Slack is back
    bot = Rtmbotd(tmp_path, fake, plugins={"numbered": plugin}, settings={"STORE_URL": store_url})
    try:
        bot.start()
        wait_until(lambda: waited <= set(numbers(fake.sent_messages())), 120, "every message that waited")
        wait_until(lambda: rows_left(store_url) == 0, 60, "the saved outbox emptied")
    finally:
        bot.stop()
    msgs = fake.sent_messages()
    got = Counter(numbers(msgs))
    lost = sorted(waited - set(got))
    young = {n for n, _ in produced} - waited           # produced within 1 s of a kill: may be lost
    duplicates = sum(c - 1 for c in got.values())
    print(f"\n{len(kills)} SIGKILLs ({store_url.split(':')[0]}): {len(produced)} produced, {len(waited)} waited "
          f">= 1 s, {len(lost)} of them lost, {duplicates} sent twice; of {len(young)} younger than 1 s at a "
          f"kill, {len(young - set(got))} lost")
    assert len(kills) >= 30
    assert not lost, f"lost after SIGKILL: {lost[:20]}"
    assert duplicates == 0, "nothing was in flight during the outage, so nothing may be sent twice"
    assert_in_order_per_channel(msgs)


def seed_backlog(url: str, n: int) -> None:
    with Store.open(url) as store:
        store.save_outbox([{"channel": CHANNELS[i % 2], "text": f"n {i}", "plugin": "p"} for i in range(n)])


def test_sigkill_while_draining_a_restored_backlog(tmp_path: Path, fake) -> None:
    """Each kill may send again only what was in flight: per channel the last message(s)
    delivered before the kill, never anything older, never out of order."""
    rng = random.Random(12)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    total = 400
    seed_backlog(url, total)
    settings = {"STORE_URL": url, "RATE_LIMIT": 25, "RATE_BURST": 1}
    rounds: list[list[dict]] = []
    for _ in range(10):
        before = len(fake.sent_messages())
        bot = Rtmbotd(tmp_path, fake, mode="socket_mode", plugins={}, notify=False, settings=settings)
        try:
            bot.start(wait_ready=False)
            time.sleep(rng.uniform(0.2, 1.5))           # in the middle of the drain
            bot.proc.send_signal(signal.SIGKILL)
            bot.proc.wait(20)
        finally:
            bot.stop()
        rounds.append(fake.sent_messages()[before:])
    before = len(fake.sent_messages())
    bot = Rtmbotd(tmp_path, fake, mode="socket_mode", plugins={}, settings=settings)
    try:
        bot.start()
        wait_until(lambda: set(numbers(fake.sent_messages())) >= set(range(total)), 120, "the whole backlog")
        wait_until(lambda: rows_left(url) == 0, 60, "the saved outbox emptied")
    finally:
        bot.stop()
    rounds.append(fake.sent_messages()[before:])
    msgs = fake.sent_messages()
    got = Counter(numbers(msgs))
    duplicates = sum(c - 1 for c in got.values())
    print(f"\n{len(rounds) - 1} SIGKILLs while draining {total} saved messages: 0 lost, {duplicates} sent twice")
    assert set(got) == set(range(total))
    assert_in_order_per_channel(msgs)
    assert sum(1 for r in rounds[:-1] if r) >= 5, "most kills should land while messages go out"
    for i, sent in enumerate(rounds[:-1]):              # what a kill may send again: its in-flight tail
        later = Counter(numbers([m for r in rounds[i + 1:] for m in r]))
        for channel in CHANNELS:
            mine = numbers([m for m in sent if m["channel"] == channel])
            again = [n for n in mine if later[n]]
            assert again == mine[len(mine) - len(again):], f"round {i} {channel}: resent {again} of {mine}"
            assert len(again) <= 2, f"round {i} {channel}: {len(again)} resent, more than in flight"


def test_one_bad_message_does_not_keep_the_others_from_surviving(tmp_path: Path, fake) -> None:
    """A lone surrogate (Slack's escaped half emoji) in one output's blocks used to make
    saving fail for all seven queued messages. The output's copy to plain JSON now
    replaces it; one the journal still cannot store is refused alone
    (tests/test_outbox_journal.py)."""
    flag = tmp_path / "go"
    plugin = f'''
import os
outputs = []
crontable = [[0.1, "tick"]]
done = False
def tick():
    global done
    if done or not os.path.exists({str(flag)!r}):
        return
    done = True
    for i in range(7):
        if i == 3:
            outputs.append({{"channel": "C1GENERAL", "text": "m3", "blocks": [{{"type": "section",
                "text": {{"type": "mrkdwn", "text": "half \\ud83d"}}}}]}})
        else:
            outputs.append(["C1GENERAL", "m%d" % i])
'''
    bot = Rtmbotd(tmp_path, fake, plugins={"emoji": plugin}, settings={"STOP_TIMEOUT": 1})
    kill_once_saved(bot, flag, 7)
    flag.unlink()
    fake.refuse_connections(0)
    again = Rtmbotd(tmp_path, fake, plugins={"emoji": plugin})
    try:
        again.start()
        msgs = fake.wait_for_messages(7, timeout=30)
        assert [m["text"] for m in msgs] == [f"m{i}" for i in range(7)]
        assert msgs[3]["blocks"][0]["text"]["text"].startswith("half ")     # the half emoji replaced
    finally:
        again.stop()


def test_a_revoked_token_keeps_the_messages_until_a_reload_with_a_new_one(tmp_path: Path, fake) -> None:
    """chat.postMessage answering token_revoked used to drop each message for good while
    STATUS still said Connected."""
    plugin = """
outputs = []
def process_message(data):
    if data.get("text") == "three":
        outputs.extend([data["channel"], "kept %d" % i] for i in range(3))
    elif data.get("text") == "ping":
        outputs.append([data["channel"], "pong"])
"""
    bot = Rtmbotd(tmp_path, fake, mode="socket_mode", plugins={"three": plugin})
    try:
        bot.start()
        assert bot.say("ping") == ["pong"]
        fake.fail_next("chat.postMessage", count=1, status=200, retry_after=None, error="token_revoked")
        fake.web_api.bot_token = "xoxb-new"            # the old token is no good from now on
        fake.message("three")
        wanted = f"Token rejected by Slack (chat.postMessage: token_revoked): fix SLACK_TOKEN in {bot.conf} and reload"
        wait_until(lambda: any(s.startswith(wanted) for s in bot.notify.statuses()), 30, "STATUS: " + wanted)
        assert "3 message(s) queued" in [s for s in bot.notify.statuses() if s.startswith(wanted)][-1]
        assert "dropped" not in bot.log()
        assert [m["text"] for m in fake.sent_messages()] == ["pong"]
        bot.settings["SLACK_TOKEN"] = "xoxb-new"
        bot.write_config()
        bot.signal(signal.SIGHUP)
        msgs = fake.wait_for_messages(4, timeout=30)
        assert [m["text"] for m in msgs] == ["pong", "kept 0", "kept 1", "kept 2"]
        wait_until(lambda: bot.notify.statuses()[-1].startswith("Connected"), 30, "STATUS: Connected")
    finally:
        bot.stop()


def test_a_store_down_at_start_is_read_once_it_is_back_and_its_messages_go_out(tmp_path: Path, fake,
                                                                                late_postgres) -> None:
    url, _port, postgres = late_postgres
    assert postgres().returncode == 0
    with Store.open(url) as store:                      # what an earlier run left
        store.save_outbox([{"channel": "C1GENERAL", "text": f"saved {i}", "plugin": "p"} for i in range(3)])
    assert postgres("stop").returncode == 0
    plugin = 'outputs = []\ndef process_message(data):\n    outputs.append([data["channel"], "pong"])\n'
    bot = Rtmbotd(tmp_path, fake, plugins={"pong": plugin}, settings={"STORE_URL": url})
    try:
        bot.start()
        bot.wait_log("cannot read the saved outbox")
        assert bot.say("ping") == ["pong"]                 # new messages go out meanwhile
        assert postgres().returncode == 0
        msgs = fake.wait_for_messages(4, timeout=180)
        assert [m["text"] for m in msgs] == ["pong", "saved 0", "saved 1", "saved 2"]
        wait_until(lambda: rows_left(url) == 0, 60, "the saved rows deleted once delivered")
    finally:
        bot.stop()

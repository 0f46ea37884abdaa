"""No config edit can freeze reload; no secret reaches the log, STATUS or stderr (issue 11, items 3, 6)."""
import secrets
import signal
import subprocess

import pytest
import yaml

from tests.e2e.harness import Rtmbotd, clean_env, rtmbotd_command, wait_until

NESTED_10000 = "X: " + "[" * 10000 + "]" * 10000 + "\n"
PARROT = '''
outputs = []
def process_message(data):
    outputs.append([data["channel"], "parrot: " + data.get("text", "")])
'''


def reload(bot, *, timeout: float = 30.0) -> str:
    """SIGHUP, then the STATUS of the READY=1 that ends the reload (RELOADING=1 first)."""
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    i = bot.notify.wait_for("RELOADING", "1", after=mark, timeout=timeout)
    j = bot.notify.wait_for("READY", "1", after=i, timeout=timeout)
    return bot.notify.messages[j][1].get("STATUS", "")


def one_shot(conf, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(rtmbotd_command() + ["-c", str(conf), *args], env=env or clean_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_reload_survives_a_config_nested_10000_deep(make_bot, fake):
    bot = make_bot(plugins={"parrot": PARROT}).start()
    good = yaml.safe_dump(bot.settings)
    bot.write_config(good + NESTED_10000)
    status = reload(bot)
    assert "reload failed" in status and "nested deeper than 64 levels" in status, status
    assert "Traceback" not in bot.log()
    bot.write_config(good + "PLUGIN_TIMEOUT: 20\n")          # the next SIGHUP still reloads
    status = reload(bot)
    assert "reload failed" not in status and "generation 2" in status, status
    assert bot.say("still here") == ["parrot: still here"]


@pytest.mark.parametrize("bad, why", [
    (NESTED_10000, "nested deeper than 64 levels"),
    ('BASE_PATH: "plug\\0ins"\n', "BASE_PATH: contains a control character"),
    ("RATE_BURST: " + "7" * 5000 + "\n", "integer with too many digits"),
    ("STOP_TIMEOUT: .nan\n", "STOP_TIMEOUT: must be a finite number"),
])
def test_check_config_and_start_exit_78_with_one_line(tmp_path, bad, why):
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-1\n" + bad)
    for args in (["--check-config"], []):
        done = one_shot(conf, *args, env=clean_env(NOTIFY_SOCKET=str(tmp_path / "none.sock")))
        assert done.returncode == 78, (args, done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and why in done.stderr, (args, done.stderr[-2000:])


KINDS = ("xoxb", "xoxp", "xoxa", "xoxr", "xoxs", "xoxe", "xapp", "xoxe.xoxp")
LEAKY = '''
import logging
import os
logging.getLogger("leaky").warning("proxies %s and %s", os.environ["http_proxy"], os.environ["https_proxy"])
crontable = [[1, "job"]]
def job():
    raise RuntimeError("cannot reach " + os.environ["https_proxy"] + " with " + os.environ["LEAK_AUTH"])
'''
BROKEN = '''
import os
raise RuntimeError("no proxy at " + os.environ["http_proxy"] + " for " + os.environ["LEAK_TOKEN"])
'''


def test_no_planted_secret_reaches_any_output(tmp_path):
    tails = {kind: secrets.token_hex(8) for kind in KINDS}
    tokens = {kind: f"{kind}-{tail}" for kind, tail in tails.items()}
    listed = "xoxb-" + secrets.token_hex(16)               # SLACK_TOKEN written as a YAML list
    bearer = secrets.token_hex(8)
    passwords = ["PW" + secrets.token_hex(6), "PW" + secrets.token_hex(6)]
    planted = [*tails.values(), listed[5:], bearer, *passwords]
    env = {"http_proxy": f"user:{passwords[0]}@127.0.0.1:9",          # no scheme: aiohttp echoes it
           "https_proxy": f"http://user:{passwords[1]}@127.0.0.1:9",
           "LEAK_AUTH": f"Authorization: Bearer {bearer}", "LEAK_TOKEN": tokens["xoxp"]}
    logfile = tmp_path / "bot.log"
    bot = Rtmbotd(tmp_path, None, plugins={"leaky": LEAKY},
                  settings={"SLACK_API_URL": "http://slack.test/api/", "LOGFILE": str(logfile)}, env=env)
    good = yaml.safe_dump(bot.settings)
    outputs = []
    try:
        for text in (good + f"DEBUG: {tokens['xoxp']}\n", good.replace("xoxb-e2e", f"[{listed}]")):
            conf = tmp_path / "check.conf"
            conf.write_text(text)
            done = one_shot(conf, "--check-config", env=clean_env(**env))
            assert done.returncode == 78 and done.stderr.count("\n") == 1, done.stderr[-2000:]
            outputs += [done.stdout, done.stderr]
        bot.start(wait_connected=False)
        wait_until(lambda: logfile.exists() and "RuntimeError: cannot reach" in logfile.read_text(), 30,
                   "the plugin's job failing with the proxy URL in its exception")
        for kind, token in tokens.items():                # a token of each kind in a wrong-typed key
            bot.write_config(good + f"DEBUG: {token}\n")
            assert "reload failed: " in reload(bot)
        bot.write_config(good.replace("xoxb-e2e", f"[{listed}]"))
        assert "SLACK_TOKEN: must be a bot token" in reload(bot)
        bot.write_config(good)
        bot.write_plugin("broken", BROKEN)
        assert "plugin failed to load: broken" in reload(bot)
        bot.signal(signal.SIGTERM)
        assert bot.wait_exit(60) == 0
    finally:
        bot.stop()
    statuses = bot.notify.statuses()
    assert len(statuses) >= 12, statuses
    channels = {"stderr": bot.log(), "LOGFILE": logfile.read_text(), "STATUS": "\n".join(statuses),
                "--check-config": "\n".join(outputs)}
    for channel, text in channels.items():
        for secret in planted:
            assert secret not in text, f"{secret} in {channel}:\n{text[-3000:]}"
    assert "[redacted]" in channels["STATUS"] and "[redacted]" in channels["LOGFILE"]
    assert f"user:[redacted]@127.0.0.1:9" in channels["LOGFILE"]

"""What a plugin prints to stdout or stderr passes the redaction like the log does
(issue 11: everything that reaches stderr passes one redaction)."""
import signal

PRINTER = '''
import sys
outputs = []
def process_message(data):
    print("plain print xoxb-1111-plugin-print-secret")
    sys.stderr.write("proxy http://squid:hunter2pass@proxy.example:3128 on stderr\\n")
    sys.stdout.write("split xoxp-2222-")
    sys.stdout.write("split-secret done\\n")
    print("stderr print xapp-1-A11-stderr-secret", file=sys.stderr)
    sys.stderr.write("unended xoxb-3333-tail-secret")           # written out at exit
    outputs.append([data["channel"], "printed"])
'''

SECRETS = ("plugin-print-secret", "hunter2pass", "split-secret", "stderr-secret", "tail-secret")


def test_a_plugins_prints_to_stdout_and_stderr_are_redacted(make_bot, fake):
    bot = make_bot(plugins={"printer": PRINTER}).start()
    assert bot.say("go") == ["printed"]
    bot.wait_log(r"split xoxp-\[redacted\] done", timeout=30)
    bot.signal(signal.SIGTERM)
    assert bot.wait_exit(60) == 0
    out = bot.log()         # the process's stdout and stderr
    assert [s for s in SECRETS if s in out] == [], out[-3000:]
    for shown in ("plain print xoxb-[redacted]", "proxy http://squid:[redacted]@proxy.example:3128 on stderr",
                  "stderr print xapp-[redacted]", "unended xoxb-[redacted]"):
        assert shown in out, out[-3000:]

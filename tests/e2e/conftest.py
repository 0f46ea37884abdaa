import pytest

from rtmbotd.testing.fakeslack import FakeSlack
from tests.e2e.harness import Rtmbotd


@pytest.fixture
def fake():
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def make_bot(tmp_path, fake):
    bots = []

    def make(**kwargs):
        bot = Rtmbotd(tmp_path, fake, **kwargs)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.stop()
        if bot.proc is not None and bot.proc.returncode not in (0, None):
            print(bot.log()[-5000:])

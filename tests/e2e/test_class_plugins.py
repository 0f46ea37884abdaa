"""python-rtmbot 0.4 class plugins (ACTIVE_PLUGINS) in the real process: packages, relative imports, reload."""
import shutil
import signal

from tests.e2e.harness import FIXTURES

ACTIVE = ["plugins.greeter.Greeter", "plugins.greeter.bot.Bot", "plugins.single.Single", "plugins.counter.Counter"]


def reload(bot) -> str:
    """SIGHUP, then the STATUS of the READY=1 that ends the reload."""
    mark = len(bot.notify.messages)
    bot.signal(signal.SIGHUP)
    i = bot.notify.wait_for("READY", "1", after=bot.notify.wait_for("RELOADING", "1", after=mark), timeout=30)
    return bot.notify.messages[i][1].get("STATUS", "")


def test_package_plugins_import_relatively_and_a_reload_follows_their_libraries(make_bot, fake):
    bot = make_bot(settings={"ACTIVE_PLUGINS": ACTIVE})
    shutil.copytree(FIXTURES / "active_plugins_relative_imports" / "plugins", bot.plugins_dir, dirs_exist_ok=True)
    bot.start()
    assert sorted(bot.say("you", replies=4, timeout=30)) == [
        "bot says hi to common", "counter 1", "greeter says hi", "hello you"]
    lib = bot.plugins_dir / "lib.py"
    lib.write_text(lib.read_text().replace("hello", "howdy"))
    util = bot.plugins_dir / "greeter" / "util.py"
    util.write_text(util.read_text().replace("says hi", "bows"))
    status = reload(bot)
    assert "4 plugin(s) loaded" in status, status
    assert sorted(bot.say("you", replies=4, timeout=30)) == [
        "bot bows to common", "counter 2", "greeter bows", "howdy you"]     # the counter kept its state
    assert "Traceback" not in bot.log()

import importlib.machinery
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from rtmbotd.config import load_config
from rtmbotd.runtime.libraries import local_names
from rtmbotd.runtime.loader import PluginEnv, build_plugin_set, hung_imports
from rtmbotd.testing.waiting import wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"


def config_for(tmp_path, case, extra=""):
    base = tmp_path / case
    shutil.copytree(FIXTURES / case, base)
    conf = base / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-1\nIMPORT_TIMEOUT: 1\n" + extra)
    return load_config(conf, env={})


def units_by_name(pset):
    return {u.name: u for u in pset.units}


def test_seed_style_module_plugin(tmp_path):
    pset = build_plugin_set(config_for(tmp_path, "seed_style"), PluginEnv())
    assert pset.errors == {}
    repeat = units_by_name(pset)["repeat"]
    assert repeat.take_outputs() == [["C1GENERAL", "repeat loaded"]]
    jobs = repeat.take_jobs()
    assert [(interval, label) for interval, _, label in jobs] == [(60.0, "tick")]
    repeat.handler("message")({"channel": "D1", "text": "hi"})
    assert repeat.take_outputs() == [["D1", 'from repeat1 "hi" in channel D1']]
    assert repeat.handler("reaction_added") is None


def test_subfolder_is_importable_library(tmp_path):
    pset = build_plugin_set(config_for(tmp_path, "seed_style"), PluginEnv())
    withlib = units_by_name(pset)["withlib"]
    withlib.handler("message")({"channel": "C1", "text": "shout hey"})
    assert withlib.take_outputs() == [["C1", "HEY!"]]


def test_class_style_with_rtmbot_core_import(tmp_path):
    cfg = config_for(tmp_path, "class_style", "EchoPlugin:\n  prefix: said\n")
    pset = build_plugin_set(cfg, PluginEnv())
    assert pset.errors == {}
    unit = units_by_name(pset)["echo:EchoPlugin"]
    unit.handler("message")({"channel": "C1", "text": "x"})
    assert unit.take_outputs() == [["C1", "said: x"]]
    (interval, run, label), = unit.take_jobs()
    assert (interval, label) == (30.0, "EchoJob")
    run()
    assert unit.take_outputs() == [["C1GENERAL", "job ran"]]
    assert unit.catch_all is not None


def test_import_errors_collected_per_plugin(tmp_path):
    pset = build_plugin_set(config_for(tmp_path, "import_errors"), PluginEnv())
    assert set(pset.plugins) == {"good"}
    assert set(pset.errors) == {"syntax", "raises", "hangs"}
    assert "SyntaxError" in pset.errors["syntax"] and "line 1" in pset.errors["syntax"]
    assert "boom at import" in pset.errors["raises"]
    assert "did not finish within 1 s" in pset.errors["hangs"]


def test_active_plugins_loads_only_named_classes(tmp_path):
    cfg = config_for(tmp_path, "active_plugins", "ACTIVE_PLUGINS:\n  - plugins.repeat.RepeatPlugin\n")
    pset = build_plugin_set(cfg, PluginEnv())
    assert pset.errors == {}
    assert [u.name for u in pset.units] == ["plugins.repeat.RepeatPlugin:RepeatPlugin"]
    missing = config_for(tmp_path / "x", "active_plugins", "ACTIVE_PLUGINS:\n  - plugins.nope.NopePlugin\n")
    assert "plugins.nope.NopePlugin" in build_plugin_set(missing, PluginEnv()).errors


def test_reload_reuses_unchanged_and_reimports_changed_fresh(tmp_path):
    cfg = config_for(tmp_path, "seed_style")
    first = build_plugin_set(cfg, PluginEnv())
    repeat_before = units_by_name(first)["repeat"].target
    repeat_before.counter = 41            # in-memory state of an unchanged plugin
    lib = cfg.plugins_dir / "withlib" / "helpers" / "shout.py"
    lib.write_text("def shout(text):\n    return text.lower() + '?'\n")
    second = build_plugin_set(cfg, PluginEnv(), first)
    assert second.reused == {"repeat"}
    assert units_by_name(second)["repeat"].target.counter == 41
    withlib = units_by_name(second)["withlib"]
    withlib.handler("message")({"channel": "C1", "text": "shout HEY"})
    assert withlib.take_outputs() == [["C1", "hey?"]]        # the library was re-imported too
    assert all(name in sys.modules for name in first.plugins["withlib"].modules)


def test_config_section_change_reloads_plugin(tmp_path):
    cfg = config_for(tmp_path, "class_style", "EchoPlugin:\n  prefix: a\n")
    first = build_plugin_set(cfg, PluginEnv())
    cfg.path.write_text("SLACK_TOKEN: xoxb-1\nEchoPlugin:\n  prefix: b\n")
    second = build_plugin_set(load_config(cfg.path, env={}), PluginEnv(), first)
    assert second.reused == set()


def test_injected_store_and_config(tmp_path):
    cfg = config_for(tmp_path, "seed_style", "repeat:\n  x: 1\n")
    pset = build_plugin_set(cfg, PluginEnv(store_for=lambda name: f"store-of-{name}"))
    module = units_by_name(pset)["repeat"].target
    assert module.store == "store-of-repeat"
    assert module.config == {"x": 1}


@pytest.mark.parametrize("entry", [[0, "tick"], ["x", "tick"], [5, "missing"], "bad", [5]])
def test_bad_crontable_entries_are_skipped(tmp_path, entry, caplog):
    cfg = config_for(tmp_path, "seed_style")
    pset = build_plugin_set(cfg, PluginEnv())
    unit = units_by_name(pset)["repeat"]
    unit.take_jobs()
    unit.target.crontable.append(entry)
    assert unit.take_jobs() == []
    assert "crontable entry" in caplog.text


# -- each plugin's own import path -----------------------------------------------------

class CountingStore(dict):
    def incr(self, key):
        self[key] = self.get(key, 0) + 1
        return self[key]


class PostingClient:
    def api_call(self, method, **kwargs):
        return {"ok": True}


def test_plugin_libraries_do_not_shadow_the_standard_library_for_the_engine(tmp_path):
    cfg = config_for(tmp_path, "shadows_stdlib")
    pset = build_plugin_set(cfg, PluginEnv(slack_client=PostingClient(), store_for=lambda name: CountingStore()))
    assert pset.errors == {}
    folder = cfg.plugins_dir / "shadow"
    assert not [p for p in sys.path if Path(p or ".").resolve() == folder.resolve()]
    for name in ("numbers", "decimal", "pickle", "mimetypes"):
        # what the engine's lazily imported SQLAlchemy and slack_sdk would find
        origin = Path(importlib.machinery.PathFinder.find_spec(name).origin)
        assert folder not in origin.parents, (name, origin)
        assert "plugin's" not in getattr(sys.modules.get(name), "WHO", "")
    shadow = units_by_name(pset)["shadow/shadow"]
    shadow.handler("message")({"channel": "C1", "text": "x"})
    assert shadow.take_outputs() == [["C1", "seen 1, api ok: True; the plugin's decimal, the plugin's mimetypes, "
                                            "the plugin's numbers, the plugin's pickle"]]


def test_two_plugins_importing_helpers_in_a_handler_get_their_own(tmp_path):
    pset = build_plugin_set(config_for(tmp_path, "same_library_names"), PluginEnv())
    assert pset.errors == {}
    units = units_by_name(pset)
    for _ in range(2):
        for name in ("alpha", "beta", "alpha"):
            unit = units[f"{name}/{name}"]
            unit.handler("message")({"channel": "C1", "text": "x"})
            assert unit.take_outputs() == [["C1", f"{name}'s helpers"]]
    assert "helpers" not in sys.modules


def test_forgotten_plugin_takes_its_libraries_along(tmp_path):
    cfg = config_for(tmp_path, "seed_style")
    first = build_plugin_set(cfg, PluginEnv())
    withlib = first.plugins["withlib"]
    libraries = [n for n in sys.modules if n.startswith(withlib.libraries.prefix)]
    assert libraries and any(n.endswith("__helpers.shout") for n in libraries)
    withlib.forget()
    assert not [n for n in sys.modules if n.startswith(withlib.libraries.prefix) or n in withlib.modules]


# -- an import that hangs ----------------------------------------------------------------

def test_hung_import_is_not_started_again_while_it_still_hangs(tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    base = tmp_path / "hung"
    (base / "plugins" / "stuck").mkdir(parents=True)
    (base / "plugins" / "stuck" / "stuck.py").write_text(
        "import os\n"
        f"if not os.path.exists({str(gate)!r} + '.open'):\n"
        f"    open({str(gate)!r}).read()      # blocks until the test opens the gate\n"
        "outputs = []\n")
    (base / "rtmbot.conf").write_text("SLACK_TOKEN: xoxb-1\nIMPORT_TIMEOUT: 0.2\n")
    cfg = load_config(base / "rtmbot.conf", env={})

    def importing():     # other tests' hung imports may end meanwhile: count this plugin's alone
        return sum(t.name == "import:stuck" for t in threading.enumerate())

    first = build_plugin_set(cfg, PluginEnv())
    assert "did not finish within 0.2 s" in first.errors["stuck"]
    for _ in range(5):
        again = build_plugin_set(cfg, PluginEnv(), first)
        assert again.errors == {"stuck": "ImportStillRunning: import still running from an earlier reload"}
    assert importing() == 1 and hung_imports() >= 1
    hung = hung_imports()
    (tmp_path / "gate.open").touch()
    with open(gate, "w"):             # the hung import reads to the end and finishes
        pass
    wait_until(lambda: importing() == 0, 10, "the hung import to end")
    assert hung_imports() < hung
    wait_until(lambda: not [n for n in sys.modules if n.startswith("_rtmbotd_") and "stuck" in n], 10,
               "the late import's modules to be dropped")
    later = build_plugin_set(cfg, PluginEnv(), first)
    assert later.errors == {} and "stuck" in later.plugins


def test_local_names_follow_pythons_precedence(tmp_path):
    folder = tmp_path / "plugins" / "mixed"
    for rel in ("time.py", "os.py", "json/extra.py", "mylib/deep.py", "pkg/__init__.py", "data/notes.txt",
                "not-a-name.py", "helpers.py", "nested/inner/mod.py", "rtmbot/__init__.py", "rtmbot/core.py",
                "rtmbotd/__init__.py"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("WHO = %r\n" % rel)
    # built-in and frozen modules cannot be shadowed, nor the engine's packages (a python-rtmbot
    # checkout beside the plugins); a namespace folder loses to an installed package
    assert local_names(folder) == {"mylib", "pkg", "helpers", "nested"}
    (folder / "mixed.py").write_text(
        "import time, os, json\n"
        "from rtmbot.core import Plugin\n"
        "import rtmbotd.runtime.compat\n"
        "from mylib import deep\n"
        "from nested.inner import mod\n"
        "import pkg, helpers\n"
        "found = [deep.WHO, mod.WHO, pkg.WHO, helpers.WHO, hasattr(time, 'monotonic'), hasattr(os, 'getpid'),\n"
        "         hasattr(json, 'dumps'), Plugin is rtmbotd.runtime.compat.Plugin]\n")
    (tmp_path / "rtmbot.conf").write_text("SLACK_TOKEN: xoxb-1\n")
    pset = build_plugin_set(load_config(tmp_path / "rtmbot.conf", env={}), PluginEnv())
    assert pset.errors == {}
    assert units_by_name(pset)["mixed/mixed"].target.found == [
        "mylib/deep.py", "nested/inner/mod.py", "pkg/__init__.py", "helpers.py", True, True, True, True]


def test_a_file_name_that_is_not_utf8_costs_no_plugin(tmp_path):
    # An editor's backup or a file unpacked from a Latin-1 archive: os.listdir hands back
    # its name with surrogate escapes, which once failed the content hash, and with it
    # discovery of every plugin (the start exited 78, every reload was rejected).
    cfg = config_for(tmp_path, "seed_style")
    folder = os.fsencode(cfg.plugins_dir / "repeat")
    with open(folder + b"/notes-caf\xe9.txt", "wb") as f:
        f.write(b"not python")
    pset = build_plugin_set(cfg, PluginEnv())
    assert pset.errors == {}
    assert "repeat" in pset.plugins and "withlib" in pset.plugins


# -- python-rtmbot 0.4 class plugins import like importlib.import_module("plugins.x") ---------

RELATIVE = "active_plugins_relative_imports"
GREETER, BOT, SINGLE, COUNTER = ("plugins.greeter.Greeter", "plugins.greeter.bot.Bot", "plugins.single.Single",
                                 "plugins.counter.Counter")
ACTIVE = "ACTIVE_PLUGINS:\n" + "".join(f"  - {name}\n" for name in (GREETER, BOT, SINGLE, COUNTER))


def said(pset, plugin, text="x"):
    unit, = [u for u in pset.units if u.plugin == plugin]
    unit.handler("message")({"channel": "C1", "text": text})
    return [text for _, text in unit.take_outputs()]


def test_class_plugins_and_their_packages_import_relatively(tmp_path):
    # Package plugins failed with "No module named '_rtmbotd_plugin_g1_...____init__'" and
    # submodules with "attempted relative import with no known parent package".
    pset = build_plugin_set(config_for(tmp_path, RELATIVE, ACTIVE), PluginEnv())
    assert pset.errors == {}
    assert said(pset, GREETER) == ["greeter says hi"]
    assert said(pset, BOT) == ["bot says hi to common"]
    assert said(pset, SINGLE, "you") == ["hello you"]
    assert said(pset, SINGLE, "late") == ["late"]           # an import inside a handler
    bot = units_by_name(pset)[BOT + ":Bot"].target
    assert bot.common_absolute is bot.common_relative       # plugins.common and ..common: one module
    greeter = units_by_name(pset)[GREETER + ":Greeter"].target
    assert greeter.util is not sys.modules[type(bot).__module__.rpartition(".")[0] + ".util"]   # each its own
    assert "plugins" not in sys.modules and "plugins.greeter" not in sys.modules


def test_a_class_plugin_failing_midway_leaves_no_module_behind(tmp_path):
    cfg = config_for(tmp_path, RELATIVE, "ACTIVE_PLUGINS:\n  - plugins.broken.Broken\n")
    (cfg.plugins_dir / "broken").mkdir()
    (cfg.plugins_dir / "broken" / "__init__.py").write_text("from .part import VALUE\n")
    (cfg.plugins_dir / "broken" / "part.py").write_text("raise RuntimeError('part fails')\n")
    pset = build_plugin_set(cfg, PluginEnv())
    assert pset.errors == {"plugins.broken.Broken": "RuntimeError: part fails"}
    assert not [n for n in sys.modules if n.startswith("_rtmbotd_") and "broken" in n]


def test_module_plugin_subfolders_import_relatively(tmp_path):
    pset = build_plugin_set(config_for(tmp_path, "module_plugin_subpackage_relative_imports"), PluginEnv())
    assert pset.errors == {}
    assert units_by_name(pset)["rel"].target.found == ("pkg, other", "ns, second")


def test_class_plugin_reload_follows_the_libraries_it_imported(tmp_path, monkeypatch):
    # A single-file class plugin was fingerprinted by its own file alone: an edited
    # plugins/lib.py (or a module of its package) stayed old across a reload.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)     # as in service, where .pyc files get written
    cfg = config_for(tmp_path, RELATIVE, ACTIVE)
    first = build_plugin_set(cfg, PluginEnv())
    assert said(first, SINGLE, "late") == ["late"]
    units_by_name(first)[COUNTER + ":Counter"].target.count = 41
    lib = cfg.plugins_dir / "lib.py"
    before = lib.stat()
    lib.write_text(lib.read_text().replace("hello", "howdy"))
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))     # same size and mtime: a .pyc would pass
    (cfg.plugins_dir / "late.py").write_text("WORD = 'late, edited'\n")   # imported in a handler
    second = build_plugin_set(cfg, PluginEnv(), first)
    assert second.errors == {}
    assert second.reused == {GREETER, BOT, COUNTER}
    assert said(second, SINGLE, "you") == ["howdy you"]
    assert said(second, SINGLE, "late") == ["late, edited"]
    assert said(second, COUNTER) == ["counter 42"]          # unchanged: the same instance, its state kept
    (cfg.plugins_dir / "greeter" / "util.py").write_text("def polite(who):\n    return who + ' bows'\n")
    third = build_plugin_set(cfg, PluginEnv(), second)
    assert third.reused == {SINGLE, COUNTER}
    assert said(third, BOT) == ["bot bows to common"]
    (cfg.plugins_dir / "common.py").write_text("WHO = 'everyone'\n")      # ..common, outside its package
    fourth = build_plugin_set(cfg, PluginEnv(), third)
    assert fourth.reused == {GREETER, SINGLE, COUNTER}
    assert said(fourth, BOT) == ["bot bows to everyone"]
    assert build_plugin_set(cfg, PluginEnv(), fourth).reused == {GREETER, BOT, SINGLE, COUNTER}


def test_a_package_beside_a_module_of_its_name_is_the_plugin_as_with_importlib(tmp_path):
    cfg = config_for(tmp_path, RELATIVE, "ACTIVE_PLUGINS:\n  - plugins.twin.Twin\n")
    (cfg.plugins_dir / "twin.py").write_text("raise RuntimeError('the module, not the package')\n")
    (cfg.plugins_dir / "twin").mkdir()
    (cfg.plugins_dir / "twin" / "__init__.py").write_text(
        "import pathlib\nfrom rtmbot.core import Plugin\n\n\nclass Twin(Plugin):\n"
        "    word = (pathlib.Path(__file__).parent / 'word.txt').read_text()\n")
    (cfg.plugins_dir / "twin" / "word.txt").write_text("one")
    first = build_plugin_set(cfg, PluginEnv())
    assert first.errors == {} and first.plugins["plugins.twin.Twin"].path.name == "__init__.py"
    (cfg.plugins_dir / "twin" / "word.txt").write_text("two")       # the package's folder is its fingerprint
    second = build_plugin_set(cfg, PluginEnv(), first)
    assert second.reused == set()
    assert units_by_name(second)["plugins.twin.Twin:Twin"].target.word == "two"


def test_class_plugin_reload_sees_a_library_that_appeared_where_an_import_failed(tmp_path):
    cfg = config_for(tmp_path, RELATIVE, "ACTIVE_PLUGINS:\n  - plugins.optional.Optional\n  - "
                     + COUNTER + "\n")
    (cfg.plugins_dir / "optional.py").write_text(
        "from rtmbot.core import Plugin\n"
        "try:\n    from . import extra\nexcept ImportError:\n    extra = None\n"
        "try:\n    import toplevel\nexcept ImportError:\n    toplevel = None\n\n\n"
        "class Optional(Plugin):\n    found = (extra is not None, toplevel is not None)\n")
    first = build_plugin_set(cfg, PluginEnv())
    optional = "plugins.optional.Optional:Optional"
    assert units_by_name(first)[optional].target.found == (False, False)
    assert build_plugin_set(cfg, PluginEnv(), first).reused == {"plugins.optional.Optional", COUNTER}
    (cfg.plugins_dir / "extra.py").write_text("")
    second = build_plugin_set(cfg, PluginEnv(), first)
    assert second.reused == {COUNTER}
    assert units_by_name(second)[optional].target.found == (True, False)
    (cfg.base_path / "toplevel.py").write_text("")              # a new top-level module: every class plugin
    third = build_plugin_set(cfg, PluginEnv(), second)
    assert third.reused == set()
    assert units_by_name(third)[optional].target.found == (True, True)


# -- crontable and Job schedules: cron expressions, checked at load ----------------------

def plugin_config(tmp_path, plugins: dict[str, str]):
    for name, code in plugins.items():
        folder = tmp_path / "plugins" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.py").write_text(code)
    conf = tmp_path / "rtmbot.conf"
    conf.write_text("SLACK_TOKEN: xoxb-1\nIMPORT_TIMEOUT: 5\n")
    return load_config(conf, env={})


def test_crontable_takes_cron_expressions_beside_intervals(tmp_path):
    from rtmbotd.runtime.cron import CronSchedule
    pset = build_plugin_set(plugin_config(tmp_path, {"oncall": (
        "crontable = [['0 9 * * MON-FRI', 'post_oncall'], [60, 'post_oncall'], ['@weekly', 'post_oncall']]\n"
        "def post_oncall():\n    pass\n")}), PluginEnv())
    assert pset.errors == {}
    jobs = units_by_name(pset)["oncall"].take_jobs()
    assert [(str(s), label) for s, _, label in jobs] == [
        ("0 9 * * MON-FRI", "post_oncall"), ("60.0", "post_oncall"), ("@weekly", "post_oncall")]
    assert isinstance(jobs[0][0], CronSchedule) and jobs[1][0] == 60.0


@pytest.mark.parametrize("table, why", [
    ("[['61 * * * *', 'f']]", "crontable entry ['61 * * * *', 'f']: cron expression '61 * * * *': bad minute field"),
    ("[['* * *', 'f']]", "cron expression '* * *': has 3 field(s), needs 5"),
    ("[['* * * * *', 'nothing_here']]", "'nothing_here' is not the name of a function of the plugin"),
    ("[['* * * * *', 'NUMBER']]", "'NUMBER' is not the name of a function of the plugin"),
    ("[[0, 'f']]", "0 is neither a positive number of seconds nor a cron expression"),
    ("[['* * * * *']]", "must be [seconds or \"cron expression\", \"function_name\"]"),
    ("[[10**400, 'f']]", "is neither a positive number of seconds nor a cron expression"),
])
def test_bad_crontable_at_load_fails_that_plugin_by_name(tmp_path, table, why, caplog):
    pset = build_plugin_set(plugin_config(tmp_path, {
        "bad": f"NUMBER = 3\ncrontable = {table}\ndef f():\n    pass\n",
        "good": "crontable = [['* * * * *', 'g']]\ndef g():\n    pass\n",
    }), PluginEnv())
    assert set(pset.plugins) == {"good"}
    assert why in pset.errors["bad"]
    assert "plugin bad failed to load: " in caplog.text and "Traceback" not in caplog.text


def test_bad_cron_entry_appended_at_run_time_is_logged_and_dropped(tmp_path, caplog):
    pset = build_plugin_set(plugin_config(tmp_path, {"later": "crontable = []\ndef f():\n    pass\n"}), PluginEnv())
    unit = units_by_name(pset)["later"]
    unit.target.crontable.extend([["61 * * * *", "f"], ["*/5 * * * *", "f"]])
    assert [str(s) for s, _, _ in unit.take_jobs()] == ["*/5 * * * *"]
    assert "plugin later: crontable entry ['61 * * * *', 'f']: cron expression '61 * * * *'" in caplog.text


def test_bad_entries_appended_at_run_time_cost_only_themselves(tmp_path, caplog):
    pset = build_plugin_set(plugin_config(tmp_path, {"later": "crontable = []\ndef f():\n    pass\n"}), PluginEnv())
    unit = units_by_name(pset)["later"]

    class Unpackable:
        def __iter__(self):
            raise RuntimeError("no")

    unit.target.crontable.extend([[10**400, "f"], Unpackable(), [60, "f"]])
    assert [s for s, _, _ in unit.take_jobs()] == [60.0]
    assert "plugin later: crontable entry [1000" in caplog.text
    assert "plugin later: reading a timed job raised; dropped" in caplog.text


CLASS_JOBS = '''
from rtmbot.core import Plugin, Job

class Quarter(Job):
    def run(self, slack_client):
        return [["C1", "quarter"]]

class Jobs(Plugin):
    def register_jobs(self):
        self.jobs.append(Quarter({schedule!r}))
        self.jobs.append(Quarter(900))
'''


def test_class_job_takes_a_cron_expression(tmp_path):
    pset = build_plugin_set(plugin_config(tmp_path, {"jobs": CLASS_JOBS.format(schedule="*/15 * * * *")}), PluginEnv())
    assert pset.errors == {}
    jobs = units_by_name(pset)["jobs:Jobs"].take_jobs()
    assert [(str(s), label) for s, _, label in jobs] == [("*/15 * * * *", "Quarter"), ("900.0", "Quarter")]


def test_class_job_with_a_bad_expression_fails_the_load(tmp_path):
    pset = build_plugin_set(plugin_config(tmp_path, {"jobs": CLASS_JOBS.format(schedule="*/15 * *")}), PluginEnv())
    assert "job Quarter('*/15 * *'): cron expression '*/15 * *': has 3 field(s)" in pset.errors["jobs"]


def test_job_check_with_a_cron_expression():
    import time
    from rtmbotd.runtime.compat import Job
    job = Job("* * * * *")
    job.lastrun = time.time() - 120
    assert job.check()
    job.lastrun = time.time() + 120
    assert not job.check()

import shutil
import sys
from pathlib import Path

import pytest

from rtmbotd.config import load_config
from rtmbotd.runtime.loader import PluginEnv, build_plugin_set

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

"""Find, import and describe plugins: seed module style and python-rtmbot 0.4 class style.

Every plugin is imported fresh from its file under a private module name (never
`importlib.reload`), with its own import path for its libraries (runtime/libraries.py),
in a thread bounded by `IMPORT_TIMEOUT`, and its errors are collected per plugin instead
of stopping the others. An import still hanging is not started again until it ends.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Callable

from rtmbotd.runtime import compat, cron
from rtmbotd.runtime.cron import CronSchedule
from rtmbotd.runtime.libraries import LibraryScope
from rtmbotd.config import Config

log = logging.getLogger(__name__)

_generation = count(1)
_SKIP_DIRS = {"__pycache__", ".git", ".hypothesis", ".pytest_cache"}


@dataclass
class Unit:
    """One receiver of events: a module-style plugin file or a class-style instance."""

    name: str
    plugin: str
    target: Any
    is_class: bool
    slack_client: Any = None
    _jobs_seen: set = field(default_factory=set)
    folder: Path | None = None      # the plugin's folder: files.upload paths are under it

    def handler(self, kind: str) -> Callable | None:
        fn = getattr(self.target, "process_" + kind, None)
        return fn if callable(fn) else None

    @property
    def catch_all(self) -> Callable | None:
        fn = getattr(self.target, "catch_all", None)
        return fn if callable(fn) else None

    def take_outputs(self) -> list:
        """Remove and return what the plugin appended to its `outputs`."""
        outs = getattr(self.target, "outputs", None)
        if not isinstance(outs, list) or not outs:
            return []
        items = outs[:]
        del outs[: len(items)]
        return items

    def take_jobs(self) -> list[tuple[float | CronSchedule, Callable[[], None], str]]:
        """New timed jobs as (seconds or CronSchedule, callable, label); bad entries are
        logged with the plugin's name and dropped (they were checked at load by `check_jobs`)."""
        found: list[tuple[float | CronSchedule, Callable[[], None], str]] = []
        if self.is_class:
            for job in list(getattr(self.target, "jobs", None) or []):
                if id(job) in self._jobs_seen:
                    continue
                self._jobs_seen.add(id(job))
                self._take(found, self._class_job, job)
            return found
        table = getattr(self.target, "crontable", None)
        if not isinstance(table, list) or not table:
            return found
        entries = table[:]
        del table[: len(entries)]
        for entry in entries:
            self._take(found, self._crontable_entry, entry)
        return found

    def _take(self, found: list, read: Callable[[Any], Any], item: Any) -> None:
        """Append `read(item)` to `found`; a bad entry is logged and dropped alone (what
        else it raises, e.g. a property of a Job, must not cost the call's outputs and jobs)."""
        try:
            found.append(read(item))
        except CrontableError as exc:
            log.error("plugin %s: %s; dropped", self.name, exc)
        except Exception:  # noqa: BLE001 - the plugin's object, not ours
            log.exception("plugin %s: reading a timed job raised; dropped", self.name)

    def check_jobs(self) -> None:
        """At load: raise CrontableError for the first bad entry of `crontable` or `jobs`
        as they stand, so a malformed schedule fails this plugin's load, by name."""
        if self.is_class:
            for job in list(getattr(self.target, "jobs", None) or []):
                self._class_job(job)
            return
        table = getattr(self.target, "crontable", None)
        if isinstance(table, list):
            for entry in table:
                self._crontable_entry(entry)

    def _crontable_entry(self, entry: Any) -> tuple[float | CronSchedule, Callable[[], None], str]:
        try:
            when, fname = entry
        except (TypeError, ValueError):
            raise CrontableError(f"crontable entry {cron.shown(entry)} must be [seconds or \"cron expression\", "
                                 f"\"function_name\"]") from None
        fn = getattr(self.target, fname, None) if isinstance(fname, str) else None
        if not callable(fn):
            raise CrontableError(f"crontable entry {cron.shown(entry)}: {cron.shown(fname)} is not the name of a function of the plugin")
        return _schedule(when, f"crontable entry {cron.shown(entry)}"), fn, fname

    def _class_job(self, job: Any) -> tuple[float | CronSchedule, Callable[[], None], str]:
        if not callable(getattr(job, "run", None)):
            raise CrontableError(f"job {type(job).__name__} has no run() method")
        when = getattr(job, "interval", None)
        return _schedule(when, f"job {type(job).__name__}({cron.shown(when)})"), self._job_runner(job), type(job).__name__

    def _job_runner(self, job: Any) -> Callable[[], None]:
        import time

        def run() -> None:
            try:
                result = job.run(self.slack_client)
            finally:
                job.lastrun = time.time()
            if result:
                self.target.outputs.extend(result)
        return run


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


class CrontableError(ValueError):
    """A `crontable` entry or `Job` with no valid schedule or target; the message names it."""


def _schedule(when: Any, what: str) -> float | CronSchedule:
    """A positive number of seconds, or a cron expression (cronsim reads it)."""
    if isinstance(when, str):
        try:
            return cron.parse(when)
        except cron.CronSyntaxError as exc:
            raise CrontableError(f"{what}: {exc}") from None
    if _positive(when):
        try:
            seconds = float(when)
        except OverflowError:       # an int past float's range (10**400)
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    raise CrontableError(f"{what}: {cron.shown(when)} is neither a positive number of seconds nor a cron expression")


@dataclass
class LoadedPlugin:
    """A plugin (a directory, or one ACTIVE_PLUGINS class) and its units."""

    name: str
    path: Path
    content_hash: str
    config_names: tuple[str, ...]
    config_hash: str
    units: list[Unit]
    modules: list[str]
    libraries: LibraryScope | None = None

    def forget(self) -> None:
        """Drop its modules and libraries from sys.modules once nothing runs them any more."""
        for name in self.modules:
            sys.modules.pop(name, None)
        if self.libraries is not None:
            self.libraries.forget()


@dataclass(frozen=True)
class PluginSource:
    name: str
    path: Path            # the plugin directory, or the module file for ACTIVE_PLUGINS
    files: tuple[Path, ...]
    class_name: str | None
    content_hash: str

    @property
    def module(self) -> str:
        """An ACTIVE_PLUGINS class's dotted module path (`plugins.greeter`)."""
        return self.name.rpartition(".")[0]


@dataclass
class PluginSet:
    """One generation of plugins: what loaded, what failed, and why."""

    generation: int
    plugins: dict[str, LoadedPlugin]
    errors: dict[str, str]
    reused: set[str] = field(default_factory=set)

    @property
    def units(self) -> list[Unit]:
        return [u for p in self.plugins.values() for u in p.units]


@dataclass
class PluginEnv:
    """What the engine gives every plugin before its code runs."""

    slack_client: Any = None
    store_for: Callable[[str], Any] | None = None


def _hash_tree(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update(os.fsencode(p.relative_to(root)) + b"\0")   # any file name, also undecodable bytes
        try:
            digest.update(p.read_bytes())
        except OSError as exc:
            digest.update(f"unreadable:{exc}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _tree_files(folder: Path) -> list[Path]:
    out = []
    for p in folder.rglob("*"):
        if any(part in _SKIP_DIRS for part in p.relative_to(folder).parts):
            continue
        if p.is_file() and p.suffix not in (".pyc", ".pyo"):
            out.append(p)
    return out


def discover(config: Config) -> tuple[dict[str, PluginSource], dict[str, str]]:
    """Plugins to load: ACTIVE_PLUGINS when given, else every `plugins/<name>/`."""
    sources: dict[str, PluginSource] = {}
    errors: dict[str, str] = {}
    if config.active_plugins:
        for dotted in config.active_plugins:
            modpath, _, cls = dotted.rpartition(".")
            rel = Path(*modpath.split("."))
            # a package wins over a module of the same name, as with importlib
            candidates = [config.base_path / rel / "__init__.py", config.base_path / rel.with_suffix(".py")]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                errors[dotted] = f"no module file {candidates[1]} or {candidates[0]}"
                continue
            files = _tree_files(found.parent) if found.name == "__init__.py" else [found]
            sources[dotted] = PluginSource(dotted, found, (found,), cls, _hash_tree(files, found.parent))
        return sources, errors
    if not config.plugins_dir.is_dir():
        return sources, errors
    for folder in sorted(config.plugins_dir.iterdir()):
        if not folder.is_dir() or folder.name in _SKIP_DIRS or folder.name.startswith("."):
            continue
        files = tuple(sorted(folder.glob("*.py")))
        if not files:
            continue
        sources[folder.name] = PluginSource(folder.name, folder, files, None,
                                            _hash_tree(_tree_files(folder), folder))
    return sources, errors


def _alias_rtmbot_core() -> None:
    """Let `from rtmbot.core import Plugin, Job` work when python-rtmbot is not installed."""
    if "rtmbot.core" in sys.modules:
        return
    try:
        if importlib.util.find_spec("rtmbot") is not None:
            return
    except (ImportError, ValueError):
        pass
    pkg = types.ModuleType("rtmbot")
    pkg.__path__ = []  # a namespace-like package with only .core
    pkg.core = compat
    sys.modules.setdefault("rtmbot", pkg)
    sys.modules.setdefault("rtmbot.core", compat)


def _private_name(gen: int, plugin: str, stem: str) -> str:
    safe = re.sub(r"\W", "_", f"{plugin}__{stem}")
    return f"_rtmbotd_plugin_g{gen}_{safe}"


def _exec_module(modname: str, file: Path, injected: dict) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(modname, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(injected)
    spec.loader.exec_module(module)   # its imports go through injected["__builtins__"]
    sys.modules[modname] = module    # only once it ran without error
    return module


def _plugin_classes(module: types.ModuleType) -> list[type]:
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, compat.Plugin) and obj is not compat.Plugin
            and obj.__module__ == module.__name__]


def _make_class_unit(cls: type, plugin: str, section: dict, env: PluginEnv) -> Unit:
    instance = cls(name=cls.__name__, slack_client=env.slack_client, plugin_config=section)
    if env.store_for is not None:
        instance.store = env.store_for(plugin)
    if not isinstance(getattr(instance, "outputs", None), list):
        instance.outputs = []
    try:
        instance.register_jobs()
    except NotImplementedError:
        pass
    unit = Unit(f"{plugin}:{cls.__name__}", plugin, instance, True, env.slack_client)
    unit.check_jobs()
    return unit


def load_source(src: PluginSource, config: Config, env: PluginEnv, gen: int) -> LoadedPlugin:
    """Import one plugin; raises whatever its code raised (and leaves no module behind)."""
    _alias_rtmbot_core()
    if src.class_name:        # imported from BASE_PATH by its dotted path, as python-rtmbot 0.4 did
        libraries = LibraryScope(src.name, config.base_path, own=[src.module.partition(".")[0]])
    else:
        libraries = LibraryScope(src.name, src.path)
    loaded = LoadedPlugin(src.name, src.path, src.content_hash, (), "", [], [], libraries)
    try:
        _load_units(src, config, env, gen, loaded)
    except BaseException:
        loaded.forget()
        raise
    return loaded


def _load_units(src: PluginSource, config: Config, env: PluginEnv, gen: int, loaded: LoadedPlugin) -> None:
    units, modules = loaded.units, loaded.modules
    class_names: list[str] = []
    for file in src.files:
        stem = file.stem
        injected = {
            "outputs": [], "crontable": [], "config": config.section(src.name),
            "slack_client": env.slack_client, "__builtins__": loaded.libraries.builtins,
        }
        if env.store_for is not None:
            injected["store"] = env.store_for(src.name)
        if src.class_name:
            module = loaded.libraries.import_module(src.module, injected)
            modules.append(module.__name__)
        else:
            modname = _private_name(gen, src.name, stem)
            modules.append(modname)
            module = _exec_module(modname, file, injected)
        classes = _plugin_classes(module)
        if src.class_name:
            cls = getattr(module, src.class_name, None)
            if not (isinstance(cls, type) and issubclass(cls, compat.Plugin)):
                raise ImportError(f"{file} has no Plugin subclass named {src.class_name}")
            classes = [cls]
        for cls in classes:
            class_names.append(cls.__name__)
            section = config.section(cls.__name__) or config.section(src.name)
            units.append(_make_class_unit(cls, src.name, section, env))
        if not classes:
            unit_name = src.name if len(src.files) == 1 else f"{src.name}/{stem}"
            unit = Unit(unit_name, src.name, module, False, env.slack_client)
            unit.check_jobs()
            units.append(unit)
    folder = src.path if src.path.is_dir() else src.path.parent
    for unit in units:
        unit.folder = folder
    loaded.config_names = (src.name, *class_names)
    loaded.config_hash = config.section_fingerprint(*loaded.config_names)


class ImportStillRunning(TimeoutError):
    """An earlier import of the same plugin file and content outlived IMPORT_TIMEOUT and still runs."""


# Imports that outlived IMPORT_TIMEOUT, by (plugin path, content hash) -> the thread still
# running them. Each such thread is one leaked thread until its import ends; a reload
# does not start another for the same plugin and content.
_hung: dict[tuple[str, str], threading.Thread] = {}
_hung_lock = threading.Lock()


def hung_imports() -> int:
    """How many plugin imports outlived IMPORT_TIMEOUT and are still running (for STATUS)."""
    with _hung_lock:
        return len(_hung)


def _load_bounded(src: PluginSource, config: Config, env: PluginEnv, gen: int) -> LoadedPlugin:
    """Run `load_source` in a thread so an import that hangs cannot hang the daemon."""
    key = (str(src.path), src.content_hash)
    with _hung_lock:
        if key in _hung:
            raise ImportStillRunning("import still running from an earlier reload")
    box: dict[str, Any] = {}

    def target() -> None:
        plugin = None
        try:
            plugin = load_source(src, config, env, gen)
        except BaseException as exc:  # noqa: BLE001 - any failure is this plugin's alone
            box["error"] = exc
            box["trace"] = traceback.format_exc()
        with _hung_lock:
            late = _hung.get(key) is threading.current_thread()
            if late:
                del _hung[key]
            box["done"] = True
        if not late:
            box["plugin"] = plugin
        elif plugin is not None:      # nobody waits for it any more
            plugin.forget()
            log.warning("plugin %s: the import that timed out has finished; it loads at the next reload", src.name)

    thread = threading.Thread(target=target, name=f"import:{src.name}", daemon=True)
    thread.start()
    thread.join(config.import_timeout)
    with _hung_lock:
        if "done" not in box:
            _hung[key] = thread
            raise TimeoutError(f"import did not finish within {config.import_timeout:g} s")
    thread.join()      # it is past its last step
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, CrontableError):     # the plugin's data, not its code: no traceback
            log.error("plugin %s failed to load: %s", src.name, exc)
        else:
            log.error("plugin %s failed to load:\n%s", src.name, box["trace"].rstrip())
        raise exc
    return box["plugin"]


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({Path(exc.filename or '?').name}, line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}"


def build_plugin_set(config: Config, env: PluginEnv, previous: PluginSet | None = None) -> PluginSet:
    """Load the plugins `config` names, reusing unchanged ones from `previous`."""
    gen = next(_generation)
    sources, errors = discover(config)
    plugins: dict[str, LoadedPlugin] = {}
    reused: set[str] = set()
    for name, src in sources.items():
        old = previous.plugins.get(name) if previous else None
        if (old is not None and old.content_hash == src.content_hash
                and old.config_hash == config.section_fingerprint(*old.config_names)
                and (old.libraries is None or old.libraries.unchanged())):
            plugins[name] = old
            reused.add(name)
            continue
        try:
            plugins[name] = _load_bounded(src, config, env, gen)
        except BaseException as exc:  # noqa: BLE001
            errors[name] = describe_error(exc)
    return PluginSet(gen, plugins, errors, reused)

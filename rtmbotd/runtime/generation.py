"""A generation = one validated config plus its plugin set, built beside the running one.

Building happens on a thread (imports may be slow); the result comes back through the
daemon's inbox as `Built`, and `reload_problem` says whether it may be swapped in.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rtmbotd.config import Config, load_config
from rtmbotd.errors import ConfigError
from rtmbotd.redact import redact
from rtmbotd.runtime.loader import PluginEnv, PluginSet, build_plugin_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    """A generation built off the loop: a new config and plugin set, or why not."""

    config: Config | None
    plugins: PluginSet | None
    error: str | None


def build_generation(path: Path, overrides: dict, env: PluginEnv, previous: PluginSet | None,
                     post: Callable[[Any], None]) -> None:
    """Start building on a thread; posts exactly one Built, whatever goes wrong."""
    def build() -> None:
        try:
            built = _build(path, overrides, env, previous)
        except BaseException as exc:  # noqa: BLE001 - a dead build thread would freeze reload for good
            log.exception("building generation from %s failed", path)
            built = Built(None, None, redact(f"{path}: {type(exc).__name__}: {_first_line(exc)}"))
        post(built)

    threading.Thread(target=build, name="build-generation", daemon=True).start()


def token_problem(config: Config) -> str | None:
    """Why `config` is no generation to reload to or check good: it has no bot token."""
    if config.has_token:
        return None
    return (f"{config.path}: SLACK_TOKEN: not set (in this file, the SLACK_TOKEN environment "
            f"variable or $CREDENTIALS_DIRECTORY/slack_token)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _build(path: Path, overrides: dict, env: PluginEnv, previous: PluginSet | None) -> Built:
    try:
        config = load_config(path)
        if overrides:
            config = dataclasses.replace(config, **overrides)
    except ConfigError as exc:
        return Built(None, None, str(exc))
    if config.logfile:
        try:
            with open(config.logfile, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            return Built(None, None, f"{config.path}: LOGFILE: cannot open {config.logfile}: {exc.strerror}")
    try:
        plugins = build_plugin_set(config, env, previous)
    except Exception as exc:  # noqa: BLE001 - reported, never fatal
        log.exception("building plugins failed")
        return Built(config, None, redact(f"plugins: {type(exc).__name__}: {_first_line(exc)}"))
    return Built(config, plugins, None)


def reload_problem(built: Built) -> str | None:
    """Why a reload may not swap `built` in (all of it must be valid), or None."""
    if built.error is not None:
        return built.error
    if built.plugins.errors:
        return "plugin failed to load: " + "; ".join(f"{n}: {e}" for n, e in sorted(built.plugins.errors.items()))
    return token_problem(built.config)

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
    """Start building on a thread; posts exactly one Built."""
    def build() -> None:
        try:
            config = load_config(path)
            if overrides:
                config = dataclasses.replace(config, **overrides)
        except ConfigError as exc:
            post(Built(None, None, str(exc)))
            return
        if config.logfile:
            try:
                with open(config.logfile, "a", encoding="utf-8"):
                    pass
            except OSError as exc:
                post(Built(None, None, f"{config.path}: LOGFILE: cannot open {config.logfile}: {exc.strerror}"))
                return
        try:
            plugins = build_plugin_set(config, env, previous)
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            log.exception("building plugins failed")
            post(Built(config, None, f"plugins: {exc}"))
            return
        post(Built(config, plugins, None))

    threading.Thread(target=build, name="build-generation", daemon=True).start()


def token_problem(config: Config) -> str | None:
    """Why `config` is no generation to reload to or check good: it has no bot token."""
    if config.has_token:
        return None
    return (f"{config.path}: SLACK_TOKEN: not set (in this file, the SLACK_TOKEN environment "
            f"variable or $CREDENTIALS_DIRECTORY/slack_token)")


def reload_problem(built: Built) -> str | None:
    """Why a reload may not swap `built` in (all of it must be valid), or None."""
    if built.error is not None:
        return built.error
    if built.plugins.errors:
        return "plugin failed to load: " + "; ".join(f"{n}: {e}" for n, e in sorted(built.plugins.errors.items()))
    return token_problem(built.config)

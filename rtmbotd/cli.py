"""The `rtmbotd` command: the only place that turns errors into exit codes."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from rtmbotd import __version__
from rtmbotd.config import DEFAULT_CONFIG_PATH, Config, load_config
from rtmbotd.errors import ConfigError, PluginLoadError, RtmbotdError, StoreError
from rtmbotd.redact import redact
from rtmbotd.signals import EX_INTERRUPTED, EarlySignals

log = logging.getLogger("rtmbotd")

DESCRIPTION = """\
Run python-rtmbot style Slack bot plugins as a service.

Plugins live in BASE_PATH/plugins/<name>/*.py (BASE_PATH defaults to the config
file's folder). With SLACK_APP_TOKEN set the bot uses Socket Mode, else the RTM API.
With no token configured, a run outside systemd starts the console: the real
engine on a built-in fake Slack, chatted with on stdin/stdout. Under systemd it
waits calmly for a token and a reload.

signals: HUP reloads config and plugins (a bad config keeps the old one running),
TERM/INT stop gracefully (a second INT forces), USR1 reopens LOGFILE; any of them
during start-up is acted on once the daemon runs.
metrics: with METRICS: "127.0.0.1:9810" set, GET /metrics serves Prometheus metrics
and `rtmbotd -c CONF status` summarises the running daemon from them.
cluster: with CLUSTER: true (a PostgreSQL STORE_URL, NODE_NAME per node) several
nodes run one bot; `rtmbotd -c CONF cluster status` lists every node (name, role,
host, pid, heartbeat age, Slack link, version; dead and stopped ones marked).
exit status: 0 ok, 64 usage, 69 already running (pidfile), no daemon answers
`status` or PostgreSQL does not answer `cluster status`, 73 cannot create
pidfile/log, 78 configuration error (--check-config: also no SLACK_TOKEN; METRICS
that cannot be listened on; CLUSTER without a PostgreSQL STORE_URL, or unset for
`cluster status`; a NODE_NAME another live node holds), 130 forced by a second INT.
"""


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the command (`rtmbotd console -c x.conf`)."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-c", "--config", default=default(DEFAULT_CONFIG_PATH), metavar="PATH",
                        help=f"YAML config file (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--base-path", default=default(None), metavar="DIR",
                        help="override BASE_PATH (plugins load from DIR/plugins)")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="log at debug level (also DEBUG: true)")


class Parser(argparse.ArgumentParser):
    """argparse with EX_USAGE (64) for bad usage instead of 2; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rtmbotd", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_options(parser, top=True)
    parser.add_argument("--check-config", action="store_true",
                        help="load the config and import the plugins without connecting; exit 0 when good, "
                             "78 when not (a config without SLACK_TOKEN is not good; a store that cannot be "
                             "reached only warns)")
    parser.add_argument("--daemon", action="store_true",
                        help="detach into the background (never under systemd); also DAEMON: true")
    parser.add_argument("--pidfile", metavar="PATH", help="with --daemon: write and lock this pidfile")
    parser.add_argument("--version", action="version", version=f"rtmbotd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _common_options(sub.add_parser("run", help="run the bot (the default)"), top=False)
    console = sub.add_parser("console", help="chat with the bot's plugins on a built-in fake Slack")
    _common_options(console, top=False)
    console.add_argument("--channel", default="D1ALICE",
                         help="channel your lines go to (default D1ALICE, a DM; try C1GENERAL)")
    _common_options(sub.add_parser("status", help="summarise the running daemon from its METRICS endpoint "
                                                  "(link, generation, plugins, outbox, cluster role)"), top=False)
    cluster = sub.add_parser("cluster", help="the cluster (CLUSTER: true): `cluster status` lists every node")
    _common_options(cluster, top=False)
    cluster.add_argument("action", choices=["status"], help="status: every node's role, host, pid, heartbeat, "
                                                           "Slack link and version")
    from rtmbotd.store.cli import add_store_parser
    _common_options(add_store_parser(sub), top=False)
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """Command-line settings that win over the config file (also on every reload)."""
    out = {}
    if args.base_path:
        base = Path(args.base_path).resolve()
        if not base.is_dir():
            raise ConfigError(f"--base-path: {base} is not a directory")
        out["base_path"] = base
    if args.debug:
        out["debug"] = True
    return out


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    changes = _overrides(args)
    return dataclasses.replace(config, **changes) if changes else config


def check_config(config: Config) -> int:
    """Load what a (re)start would load: the store and every plugin, without connecting."""
    from rtmbotd.runtime.generation import token_problem
    from rtmbotd.runtime.loader import PluginEnv, build_plugin_set
    import tempfile
    problem = token_problem(config)     # the rule a reload follows: no token, no swap
    if problem is not None:
        raise ConfigError(problem)
    if config.metrics is not None:
        from rtmbotd.metrics.server import check_listen
        check_listen(config.metrics, config.path)
    from rtmbotd.store import Store, StoreUnavailableError, StoreUnreachableError
    with tempfile.TemporaryDirectory(prefix="rtmbotd-check-") as scratch:
        try:   # never create a store just to check: a fresh install has none yet
            store = Store.open(config.store_url, config.base_path, config.store_synchronous, create=False)
        except StoreUnavailableError as exc:   # plugins still find a working `store`
            if isinstance(exc, StoreUnreachableError):      # the daemon waits for it: not a config error
                print(redact(f"rtmbotd: warning: store unreachable: {exc}; the daemon starts anyway and retries"),
                      file=sys.stderr)
            store = Store.open(f"sqlite:///{scratch}/check.sqlite")
        with store:
            plugins = build_plugin_set(config, PluginEnv(store_for=store.plugin))
    if plugins.errors:
        raise PluginLoadError(plugins.errors)
    names = ", ".join(sorted(plugins.plugins)) or "none"
    print(f"{config.path}: OK ({config.connection}; plugins: {names})")
    return os.EX_OK


def _under_systemd() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET") or os.environ.get("INVOCATION_ID"))


def run(config: Config, args: argparse.Namespace, early_signals: list[int]) -> int:
    from rtmbotd.daemon import Daemon
    from rtmbotd.daemonize import daemon_context
    from rtmbotd.logsetup import Logging

    detach = (args.daemon or config.daemon) and not _under_systemd()
    pidfile = args.pidfile or config.pidfile
    with daemon_context(detach, pidfile):
        logs = Logging()
        try:
            logs.configure(debug=config.debug, logfile=config.logfile)
        except OSError as exc:
            print(redact(f"rtmbotd: LOGFILE: cannot open {config.logfile}: {exc.strerror}"), file=sys.stderr)
            return os.EX_CANTCREAT
        from rtmbotd.stdio import redact_stdio
        redact_stdio()        # plugins' print()s too; the log handler above already redacts
        daemon = Daemon(config, logging_=logs, overrides=_overrides(args), early_signals=early_signals)
        return asyncio.run(daemon.run())


PACKAGED_STATE_DIR = "/var/lib/rtmbot"


def _packaged_state_directory(config: Config) -> None:
    """Run by hand with the packaged config, use the service's state directory.

    systemd sets $STATE_DIRECTORY for the service (and its ExecReload); a sysadmin's
    `rtmbotd store dump` or `--check-config` must find the same store.
    """
    if (not os.environ.get("STATE_DIRECTORY") and not config.store_url
            and str(config.path) == DEFAULT_CONFIG_PATH and os.path.isdir(PACKAGED_STATE_DIR)):
        os.environ["STATE_DIRECTORY"] = PACKAGED_STATE_DIR


def main(argv: list[str] | None = None) -> int:
    # A stop or reload during start-up must neither kill us (the default actions) nor be
    # lost: held from here, replayed into the daemon's loop once it runs.
    early = EarlySignals()
    early.catch()
    args = build_parser().parse_args(argv)
    if args.check_config or args.command in ("store", "status", "cluster"):
        early.release()           # not the daemon: Ctrl-C ends them as usual
    from rtmbotd.logsetup import early_logging
    early_logging()
    try:
        config = _load(args)
        _packaged_state_directory(config)
        if args.check_config:
            return check_config(config)
        if args.command == "status":
            from rtmbotd.metrics.summary import status
            print(status(config))
            return os.EX_OK
        if args.command == "cluster":
            from rtmbotd.cluster.cli import cluster_status
            print(cluster_status(config))
            return os.EX_OK
        if args.command == "store":
            from rtmbotd.store.cli import run_store_command
            return run_store_command(args, config)
        if args.command == "console" or (args.command is None and not config.has_token
                                          and not _under_systemd() and not (args.daemon or config.daemon)):
            from rtmbotd.console import run_console
            return run_console(config, channel=getattr(args, "channel", "D1ALICE"),
                               overrides=_overrides(args), early_signals=early.pending)
        return run(config, args, early.pending)
    except ConfigError as exc:
        print(redact(f"rtmbotd: configuration error: {exc}"), file=sys.stderr)
        return os.EX_CONFIG
    except PluginLoadError as exc:
        for name, why in sorted(exc.errors.items()):
            print(redact(f"rtmbotd: plugin {name}: {why}"), file=sys.stderr)
        return os.EX_CONFIG
    except StoreError as exc:
        print(redact(f"rtmbotd: store: {exc}"), file=sys.stderr)
        return os.EX_CONFIG
    except RtmbotdError as exc:
        print(redact(f"rtmbotd: {exc}"), file=sys.stderr)
        return getattr(exc, "exit_code", os.EX_SOFTWARE)
    except KeyboardInterrupt:
        return EX_INTERRUPTED

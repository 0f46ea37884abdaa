"""`rtmbotd store ...`: dump, load, get, set and delete plugin keys from a shell.

Safe while the daemon runs: it is just another writer on the same database, and the
store serializes writers across processes. Read commands never create a store, so a
mistyped location is an error rather than a new empty file.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rtmbotd.config import Config
from rtmbotd.errors import StoreError
from rtmbotd.redact import redact
from rtmbotd.store.url import DEFAULT_FILENAME

if TYPE_CHECKING:      # SQLAlchemy is imported only when a store command runs
    from rtmbotd.store.database import Store

log = logging.getLogger(__name__)

EX_ABSENT = 1          # `get`/`del` of a key that is not there, as grep(1) says no match
EX_OK, EX_DATAERR, EX_NOINPUT, EX_IOERR = os.EX_OK, os.EX_DATAERR, os.EX_NOINPUT, os.EX_IOERR
SERVICE_STATE_DIRECTORY = Path("/var/lib/rtmbot")     # StateDirectory= of the packaged unit

HELP = """\
Inspect and edit the plugin store (safe while the daemon runs).

The store is STORE_URL from the config file; without one, rtmbot.sqlite in
$STATE_DIRECTORY (the service's /var/lib/rtmbot), else in BASE_PATH.
Dump output is {"plugin": {"key": value, ...}, ...}; load reads the same shape.
load refuses a key or value that no database can hold (NaN, a lone surrogate
such as "\\ud83d", a NUL in a key) alone, naming it, and loads the rest.
exit status: 0 ok, 1 no such key, 65 bad JSON input (nothing loaded) or some
items refused (the rest loaded), 66 input file missing, 74 the store cannot be
opened or written.
"""


def add_store_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `store` command and its actions to an argparse subparsers object."""
    parser = subparsers.add_parser("store", help="inspect and edit the plugin store", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", metavar="URL", help="SQLAlchemy URL of the store (overrides STORE_URL)")
    actions = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    dump = actions.add_parser("dump", help="print every plugin's keys as JSON")
    dump.add_argument("--plugin", metavar="NAME", help="only this plugin")
    load = actions.add_parser("load", help="merge keys from JSON (as printed by dump)")
    load.add_argument("file", nargs="?", default="-", help="JSON file (default: standard input)")
    load.add_argument("--replace", action="store_true", help="first delete all keys of each plugin it names")
    get = actions.add_parser("get", help="print one key's value as JSON (exit 1 when absent)")
    set_ = actions.add_parser("set", help="set one key; VALUE is JSON, a bare word is a string")
    delete = actions.add_parser("del", help="delete one key (exit 1 when absent)")
    for action in (get, set_, delete):
        action.add_argument("plugin", metavar="PLUGIN")
        action.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE")
    set_.add_argument("--create", action="store_true", help="create the store if it does not exist yet")
    return parser


def parse_value(word: str) -> Any:
    """VALUE of `store set`: JSON when it parses as JSON, else the word as a string."""
    def refuse(constant: str) -> Any:
        raise ValueError(constant)               # NaN and Infinity are not JSON
    try:
        return json.loads(word, parse_constant=refuse)
    except ValueError:
        return word


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _open(args: argparse.Namespace, config: Config, create: bool) -> Store:
    from rtmbotd.store.database import Store
    url = args.url or config.store_url
    try:
        return Store.open(url, base_path=config.base_path, synchronous=config.store_synchronous,
                          create=create, lock_timeout=60.0)
    except StoreError as exc:
        hint = ""
        service_file = SERVICE_STATE_DIRECTORY / DEFAULT_FILENAME
        if url is None and not os.environ.get("STATE_DIRECTORY") and service_file.exists():
            hint = (f"\nthe service keeps its store in {SERVICE_STATE_DIRECTORY}: run with "
                    f"STATE_DIRECTORY={SERVICE_STATE_DIRECTORY}, or --url sqlite:///{service_file}")
        elif url is None and "no store at" in str(exc):
            hint = ("\nnothing is stored yet: the daemon creates this file when a plugin first uses "
                    "its store; `rtmbotd store set --create PLUGIN KEY VALUE` creates it now")
        raise StoreError(f"{exc}{hint}") from None


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    return Path(name).read_text(encoding="utf-8")


def run_store_command(args: argparse.Namespace, config: Config) -> int:
    """Run `rtmbotd store ACTION`; returns the exit status (messages go to stderr)."""
    command = args.store_command
    try:
        if command == "load":
            return _load(args, config)
        with _open(args, config, create=command == "set" and args.create) as store:
            if command == "dump":
                _print_json(store.dump(args.plugin), sys.stdout)
                return EX_OK
            ps = store.plugin(args.plugin)
            if command == "get":
                value = ps.get(args.key, ps.ABSENT)
                if value is ps.ABSENT:
                    print(f"rtmbotd store: {args.plugin}: no key {args.key!r}", file=sys.stderr)
                    return EX_ABSENT
                _print_json(value, sys.stdout)
                return EX_OK
            if command == "set":
                ps[args.key] = parse_value(args.value)
                return EX_OK
            if command == "del":
                if ps.pop(args.key, ps.ABSENT) is ps.ABSENT:
                    print(f"rtmbotd store: {args.plugin}: no key {args.key!r}", file=sys.stderr)
                    return EX_ABSENT
                return EX_OK
        raise ValueError(f"unknown store action {command!r}")
    except StoreError as exc:
        print(redact(f"rtmbotd store: {exc}"), file=sys.stderr)
        return EX_IOERR
    except TypeError as exc:              # a key or value no database can hold
        print(f"rtmbotd store: {getattr(args, 'plugin', None) or 'load'}: {exc}", file=sys.stderr)
        return EX_DATAERR


def _load(args: argparse.Namespace, config: Config) -> int:
    source = "standard input" if args.file == "-" else args.file
    try:
        data = json.loads(_read_input(args.file))
    except FileNotFoundError:
        print(f"rtmbotd store: {source}: no such file", file=sys.stderr)
        return EX_NOINPUT
    except (OSError, UnicodeDecodeError) as exc:
        print(f"rtmbotd store: {source}: cannot read: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except json.JSONDecodeError as exc:
        print(f"rtmbotd store: {source}: not JSON: {exc}", file=sys.stderr)
        return EX_DATAERR
    bad = ([] if isinstance(data, dict) else ["the top level must be an object of plugins"]) or \
        [f"plugin {name!r}: must be an object of keys" for name, keys in data.items() if not isinstance(keys, dict)]
    if bad:
        print(f"rtmbotd store: {source}: {bad[0]} (as `rtmbotd store dump` prints)", file=sys.stderr)
        return EX_DATAERR
    refused: list[str] = []
    with _open(args, config, create=True) as store:
        count = store.load(data, replace=args.replace, refused=refused)
    for why in refused:
        print(f"rtmbotd store: {source}: refused {why}", file=sys.stderr)
    verb = "replaced" if args.replace else "merged"
    print(f"rtmbotd store: {verb} {count} keys of {len(data)} plugins into {store.describe()}"
          + (f"; {len(refused)} refused, see above" if refused else ""), file=sys.stderr)
    return EX_DATAERR if refused else EX_OK

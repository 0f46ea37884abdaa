"""Load and validate the YAML configuration (python-rtmbot compatible keys)."""
from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Mapping

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from rtmbotd.errors import ConfigError
from rtmbotd.metrics.address import Address, MetricsError, parse_address
from rtmbotd.redact import redact
from rtmbotd.runtime.cron import system_zone, zone_named

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/rtmbot/rtmbot.conf"
DEFAULT_API_URL = "https://slack.com/api/"
CONNECTION_MODES = ("rtm", "socket_mode")

# Bounds that keep any edit of the file from hurting the daemon: a config is a few KiB.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 64                  # nesting of lists and mappings, aliases expanded
MAX_VALUES = 100_000            # scalars, lists and mappings, aliases expanded ("billion laughs")
MAX_SECONDS = 7 * 24 * 3600     # any duration key
MAX_RATE = 10_000               # RATE_LIMIT (messages/s) and RATE_BURST
MAX_ERROR = 300                 # characters of a ConfigError: it ends up in STATUS
SECRET_KEYS = ("SLACK_TOKEN", "SLACK_APP_TOKEN", "STORE_URL")   # values never echoed in an error
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NODE_NAME = 63
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (MAX_NODE_NAME - 1))
_ONE_TOKEN = re.compile(r"[\x21-\x7e]+")     # printable ASCII, no spaces: it goes into HTTP headers

# key: (type or types, description) for the scalar settings rtmbotd understands.
_NUMBERS = (int, float)
KNOWN_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "SLACK_TOKEN": ((str,), "a bot token (xoxb-...)"),
    "SLACK_APP_TOKEN": ((str,), "an app-level token (xapp-...)"),
    "SLACK_API_URL": ((str,), "an http(s) URL"),
    "CONNECTION": ((str,), "rtm or socket_mode"),
    "BASE_PATH": ((str,), "a directory"),
    "DEBUG": ((bool,), "true or false"),
    "LOGFILE": ((str,), "a file path"),
    "DAEMON": ((bool,), "true or false"),
    "PIDFILE": ((str,), "a file path"),
    "ACTIVE_PLUGINS": ((list,), "a list of dotted class paths"),
    "RATE_LIMIT": (_NUMBERS, "messages per second per channel (0 = unlimited)"),
    "RATE_BURST": ((int,), "a whole number of messages"),
    "PLUGIN_TIMEOUT": (_NUMBERS, "seconds"),
    "IMPORT_TIMEOUT": (_NUMBERS, "seconds"),
    "STOP_TIMEOUT": (_NUMBERS, "seconds"),
    "STORE_URL": ((str,), "an SQLAlchemy URL"),
    "STORE_SYNCHRONOUS": ((str,), "FULL, NORMAL, EXTRA or OFF"),
    "METRICS": ((str,), 'host:port like "127.0.0.1:9810"'),
    "CLUSTER": ((bool,), "true or false"),
    "NODE_NAME": ((str,), "a node name (letters, digits, . _ -)"),
    "TIMEZONE": ((str,), "an IANA time zone name like Europe/Berlin"),
}


@dataclass(frozen=True)
class Config:
    """One validated configuration; a reload builds a new one beside the old."""

    path: Path
    base_path: Path
    slack_token: str | None = field(default=None, repr=False)     # secrets stay out of reprs
    app_token: str | None = field(default=None, repr=False)
    connection: str = "rtm"
    api_url: str = DEFAULT_API_URL
    debug: bool = False
    logfile: str | None = None
    daemon: bool = False
    pidfile: str | None = None
    active_plugins: tuple[str, ...] = ()
    rate_limit: float = 1.0
    rate_burst: int = 4
    plugin_timeout: float = 30.0
    import_timeout: float = 10.0
    stop_timeout: float = 10.0
    store_url: str | None = None
    store_synchronous: str = "FULL"
    metrics: Address | None = None     # where GET /metrics is served; None: nowhere
    cluster: bool = False              # several nodes share the PostgreSQL store (rtmbotd.cluster)
    node_name: str = ""                # this node's name in the cluster (default: the host name)
    timezone: tzinfo = field(default_factory=system_zone)     # cron jobs' times (TIMEZONE)
    plugin_sections: Mapping[str, Any] = field(default_factory=dict)

    @property
    def plugins_dir(self) -> Path:
        return self.base_path / "plugins"

    @property
    def has_token(self) -> bool:
        return bool(self.slack_token)

    def section(self, name: str) -> dict:
        """The per-plugin section `name:` of the config file (empty when absent)."""
        value = self.plugin_sections.get(name)
        return dict(value) if isinstance(value, dict) else {}

    def section_fingerprint(self, *names: str) -> str:
        return json.dumps([self.plugin_sections.get(n) for n in names], sort_keys=True, default=str)

    def connection_key(self) -> tuple:
        """What, when changed by a reload, forces a new Slack connection."""
        return (self.slack_token, self.app_token, self.connection, self.api_url)


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses deep nesting and alias bombs before constructing anything."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively: stop at MAX_DEPTH, long before a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _measure(node, 1, {}, set())
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:    # a date like 2024-13-45
            raise ConstructorError(None, None, f"cannot read this value: {str(exc).split(':')[0]}",
                                   node.start_mark) from None

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:    # over sys.get_int_max_str_digits() digits
            raise ConstructorError(None, None, "integer with too many digits", node.start_mark) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _measure(node: yaml.Node, level: int, memo: dict, active: set) -> tuple[int, int]:
    """(values, height) of `node` with every alias expanded; raises past the bounds.

    Memoized per node, so a 435-byte billion laughs is measured in a few steps instead
    of being expanded to 80 MB the first time something serialises the config.
    """
    key = id(node)
    if key in memo:
        size, height = memo[key]
    else:
        if key in active:
            raise ComposerError(None, None, "an alias refers to its own anchor (a recursive structure)",
                                node.start_mark)
        if level > MAX_DEPTH:
            raise ComposerError(None, None, f"aliases nest it deeper than {MAX_DEPTH} levels", node.start_mark)
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        size, height = 1, 1
        for child in children:
            child_size, child_height = _measure(child, level + 1, memo, active)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_VALUES:
                raise ComposerError(None, None, f"aliases expand it to more than {MAX_VALUES} values",
                                    node.start_mark)
        active.discard(key)
        memo[key] = (size, height)
    if level - 1 + height > MAX_DEPTH:
        raise ComposerError(None, None, f"aliases nest it deeper than {MAX_DEPTH} levels", node.start_mark)
    return size, height


def read_yaml(path: Path) -> dict:
    """Parse the config file into a mapping, with errors that say where and what."""
    try:
        # O_NONBLOCK: a FIFO with no writer would block the open, and the reload, for good;
        # opened so, it reads as empty. (Reads block again: a pipe's writer is waited for.)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader with bounds
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark:
            problem += f" ({context} at line {cmark.line + 1})"
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of KEY: value, not {type(data).__name__}")
    return data


def _secret(path: Path, data: dict, key: str, env: Mapping[str, str], cred_name: str) -> str | None:
    """A secret from the environment, else systemd credentials, else the file."""
    value, source = data.get(key), "the config file"
    if env.get(key):
        value, source = env[key], "the environment"
    elif env.get("CREDENTIALS_DIRECTORY"):
        cred = Path(env["CREDENTIALS_DIRECTORY"]) / cred_name
        try:
            text = cred.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cred}: cannot read credential: {exc}") from None
        if text:
            value, source = text, str(cred)
    value = value.strip() if isinstance(value, str) else None
    if value and not _ONE_TOKEN.fullmatch(value):
        raise ConfigError(f"{path}: {key}: the token from {source} contains spaces or control characters")
    return value or None


def _check_types(path: Path, data: dict) -> None:
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {_shown(key, 40)}: keys must be strings")
        spec = KNOWN_KEYS.get(key)
        if spec is None or value is None:
            continue
        types, what = spec
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            shown = "" if key in SECRET_KEYS else f" {_shown(value, 40)}"
            raise ConfigError(f"{path}: {key}: must be {what}, got {type(value).__name__}{shown}")
        if isinstance(value, str):
            _no_control(path, key, value)


def _no_control(path: Path, key: str, value: str) -> str:
    if _CONTROL.search(value):
        raise ConfigError(f"{path}: {key}: contains a control character (a NUL byte, a line break...)")
    return value


def _number(path: Path, data: dict, key: str, default: float, minimum: float, maximum: float = MAX_SECONDS) -> float:
    """A finite number between `minimum` and `maximum` (NaN would pass any comparison)."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: {key}: must be a finite number, got {value}")
    if not minimum <= value <= maximum:
        shown = value if abs(value) < 1e15 else "a larger number"
        raise ConfigError(f"{path}: {key}: must be between {minimum:g} and {maximum:g}, got {shown}")
    return float(value)


def _base_path(path: Path, base: str | None) -> Path:
    if not base:
        return path.parent
    try:
        base_path = (path.parent / base).resolve()
        usable = base_path.is_dir()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: BASE_PATH: cannot use it: {getattr(exc, 'strerror', None) or exc}") from None
    if not usable:
        raise ConfigError(f"{path}: BASE_PATH: {base_path} is not a directory")
    return base_path


def _plugin_sections(path: Path, data: dict) -> dict:
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    for name, section in sections.items():
        try:   # what section_fingerprint will do at every reload
            json.dumps(section, sort_keys=True, default=str)
        except TypeError:
            raise ConfigError(f"{path}: {name}: a mapping mixes key types (text and numbers); quote the keys") from None
    return sections


def _is_postgresql(url: str | None) -> bool:
    if not url:
        return False
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        return make_url(url).get_backend_name() in ("postgresql", "postgres")
    except (ArgumentError, ValueError):
        return False


def _node_name(path: Path, value: str | None) -> str:
    """NODE_NAME, or the host name: what other nodes and `cluster status` call this node."""
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        name = socket.gethostname() or "localhost"
    if not _NODE_NAME.fullmatch(name):
        raise ConfigError(f"{path}: NODE_NAME: must be 1-{MAX_NODE_NAME} letters, digits, '.', '_' or '-', "
                          f"got {_shown(name, 40)}")
    return name


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the configuration at `path`.

    Raises ConfigError and nothing else, with one redacted line: a reload thread or
    `--check-config` must never meet a RecursionError or ValueError from an odd edit.
    """
    where = path
    try:
        where = Path(path).absolute()
        return _load(where, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(_one_line(str(exc))) from None
    except RecursionError:
        raise ConfigError(_one_line(f"{where}: nested too deeply")) from None
    except Exception as exc:  # noqa: BLE001 - any edit of the file must stay a ConfigError
        raise ConfigError(_one_line(f"{where}: cannot load: {type(exc).__name__}: {exc}")) from None


def _shown(value: Any, width: int) -> str:
    """`value`'s repr cut to `width`, redacted before it is cut: a cut password loses the
    `@` the redaction recognises it by."""
    text = redact(repr(value))
    return text if len(text) <= width else text[:width]


def _one_line(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def _load(path: Path, env: Mapping[str, str]) -> Config:
    data = read_yaml(path)
    _check_types(path, data)

    token = _secret(path, data, "SLACK_TOKEN", env, "slack_token")
    app_token = _secret(path, data, "SLACK_APP_TOKEN", env, "slack_app_token")
    if token and not token.startswith("xox"):
        hint = " (that is an app token: put it in SLACK_APP_TOKEN)" if token.startswith("xapp-") else ""
        raise ConfigError(f"{path}: SLACK_TOKEN: must be a bot token starting with xoxb-{hint}")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError(f"{path}: SLACK_APP_TOKEN: must be an app-level token starting with xapp-")

    connection = data.get("CONNECTION") or ("socket_mode" if app_token else "rtm")
    connection = connection.strip().lower().replace("-", "_")
    if connection not in CONNECTION_MODES:
        raise ConfigError(f"{path}: CONNECTION: must be rtm or socket_mode, got {_shown(data.get('CONNECTION'), 40)}")
    if connection == "socket_mode" and token and not app_token:
        raise ConfigError(f"{path}: SLACK_APP_TOKEN: Socket Mode needs an app-level token (xapp-...)")
    if app_token and not token:
        raise ConfigError(f"{path}: SLACK_TOKEN: Socket Mode needs a bot token (xoxb-...) beside SLACK_APP_TOKEN")

    api_url = env.get("SLACK_API_URL") or data.get("SLACK_API_URL") or DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")) or _CONTROL.search(api_url):
        raise ConfigError(f"{path}: SLACK_API_URL: must be an http:// or https:// URL, got {_shown(api_url, 60)}")
    if not api_url.endswith("/"):
        api_url += "/"

    base_path = _base_path(path, data.get("BASE_PATH"))

    active = data.get("ACTIVE_PLUGINS") or []
    for item in active:
        if not isinstance(item, str) or "." not in item or _CONTROL.search(item):
            raise ConfigError(f"{path}: ACTIVE_PLUGINS: entries must be dotted paths like plugins.repeat.RepeatPlugin, got {_shown(item, 60)}")

    sync = (data.get("STORE_SYNCHRONOUS") or "FULL").upper()
    if sync not in ("FULL", "NORMAL", "OFF", "EXTRA"):
        raise ConfigError(f"{path}: STORE_SYNCHRONOUS: must be FULL, NORMAL, EXTRA or OFF, got {_shown(sync, 40)}")

    try:
        metrics = parse_address(data["METRICS"]) if data.get("METRICS") else None
    except MetricsError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    cluster = bool(data.get("CLUSTER", False))
    store_url = _no_control(path, "STORE_URL", env.get("STORE_URL") or data.get("STORE_URL") or "") or None
    if cluster and not _is_postgresql(store_url):
        found = "SQLite is one host's file" if store_url else "STORE_URL is not set"
        raise ConfigError(f"{path}: CLUSTER: needs a PostgreSQL STORE_URL (postgresql://...), the database the "
                          f"nodes share; {found}")
    node_name = _node_name(path, data.get("NODE_NAME"))
    try:
        zone = zone_named(data["TIMEZONE"]) if data.get("TIMEZONE") else system_zone()
    except ValueError as exc:
        raise ConfigError(f"{path}: TIMEZONE: {exc}") from None

    for key in data:
        if key not in KNOWN_KEYS and not isinstance(data[key], dict):
            log.warning("%s: unknown key %s ignored", path, _shown(key, 60))

    return Config(
        path=path,
        base_path=base_path,
        slack_token=token,
        app_token=app_token,
        connection=connection,
        api_url=api_url,
        debug=bool(data.get("DEBUG", False)),
        logfile=data.get("LOGFILE") or None,
        daemon=bool(data.get("DAEMON", False)),
        pidfile=data.get("PIDFILE") or None,
        active_plugins=tuple(active),
        rate_limit=_number(path, data, "RATE_LIMIT", 1.0, 0.0, MAX_RATE),
        rate_burst=int(_number(path, data, "RATE_BURST", 4, 1, MAX_RATE)),
        plugin_timeout=_number(path, data, "PLUGIN_TIMEOUT", 30.0, 0.1),
        import_timeout=_number(path, data, "IMPORT_TIMEOUT", 10.0, 0.1),
        stop_timeout=_number(path, data, "STOP_TIMEOUT", 10.0, 0.0),
        store_url=store_url,
        store_synchronous=sync,
        metrics=metrics,
        cluster=cluster,
        node_name=node_name,
        timezone=zone,
        plugin_sections=_plugin_sections(path, data),
    )

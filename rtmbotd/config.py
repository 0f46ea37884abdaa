"""Load and validate the YAML configuration (python-rtmbot compatible keys)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from rtmbotd.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/rtmbot/rtmbot.conf"
DEFAULT_API_URL = "https://slack.com/api/"
CONNECTION_MODES = ("rtm", "socket_mode")

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
}


@dataclass(frozen=True)
class Config:
    """One validated configuration; a reload builds a new one beside the old."""

    path: Path
    base_path: Path
    slack_token: str | None = None
    app_token: str | None = None
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


def read_yaml(path: Path) -> dict:
    """Parse the config file into a mapping, with errors that say where and what."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    try:
        data = yaml.safe_load(text)
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


def _secret(data: dict, key: str, env: Mapping[str, str], cred_name: str) -> str | None:
    """A secret from the environment, else systemd credentials, else the file."""
    if env.get(key):
        return env[key].strip()
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / cred_name
        try:
            value = cred.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            value = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cred}: cannot read credential: {exc}") from None
        if value:
            return value
    value = data.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _check_types(path: Path, data: dict) -> None:
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r}: keys must be strings")
        spec = KNOWN_KEYS.get(key)
        if spec is None or value is None:
            continue
        types, what = spec
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            raise ConfigError(f"{path}: {key}: must be {what}, got {type(value).__name__} {value!r:.40}")


def _number(path: Path, data: dict, key: str, default: float, minimum: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if value < minimum:
        raise ConfigError(f"{path}: {key}: must be at least {minimum}, got {value}")
    return float(value)


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the configuration at `path`; raise ConfigError."""
    env = os.environ if env is None else env
    path = Path(path).absolute()
    data = read_yaml(path)
    _check_types(path, data)

    token = _secret(data, "SLACK_TOKEN", env, "slack_token")
    app_token = _secret(data, "SLACK_APP_TOKEN", env, "slack_app_token")
    if token and not token.startswith("xox"):
        hint = " (that is an app token: put it in SLACK_APP_TOKEN)" if token.startswith("xapp-") else ""
        raise ConfigError(f"{path}: SLACK_TOKEN: must be a bot token starting with xoxb-{hint}")
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError(f"{path}: SLACK_APP_TOKEN: must be an app-level token starting with xapp-")

    connection = data.get("CONNECTION") or ("socket_mode" if app_token else "rtm")
    connection = connection.strip().lower().replace("-", "_")
    if connection not in CONNECTION_MODES:
        raise ConfigError(f"{path}: CONNECTION: must be rtm or socket_mode, got {data.get('CONNECTION')!r}")
    if connection == "socket_mode" and token and not app_token:
        raise ConfigError(f"{path}: SLACK_APP_TOKEN: Socket Mode needs an app-level token (xapp-...)")
    if app_token and not token:
        raise ConfigError(f"{path}: SLACK_TOKEN: Socket Mode needs a bot token (xoxb-...) beside SLACK_APP_TOKEN")

    api_url = env.get("SLACK_API_URL") or data.get("SLACK_API_URL") or DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: SLACK_API_URL: must start with http:// or https://, got {api_url!r}")
    if not api_url.endswith("/"):
        api_url += "/"

    base = data.get("BASE_PATH")
    base_path = (path.parent / base).resolve() if base else path.parent
    if base and not base_path.is_dir():
        raise ConfigError(f"{path}: BASE_PATH: {base_path} is not a directory")

    active = data.get("ACTIVE_PLUGINS") or []
    for item in active:
        if not isinstance(item, str) or "." not in item:
            raise ConfigError(f"{path}: ACTIVE_PLUGINS: entries must be dotted paths like plugins.repeat.RepeatPlugin, got {item!r}")

    sync = (data.get("STORE_SYNCHRONOUS") or "FULL").upper()
    if sync not in ("FULL", "NORMAL", "OFF", "EXTRA"):
        raise ConfigError(f"{path}: STORE_SYNCHRONOUS: must be FULL, NORMAL, EXTRA or OFF, got {sync!r}")

    burst = data.get("RATE_BURST", 4)
    if burst < 1:
        raise ConfigError(f"{path}: RATE_BURST: must be at least 1, got {burst}")

    for key in data:
        if key not in KNOWN_KEYS and not isinstance(data[key], dict):
            log.warning("%s: unknown key %s ignored", path, key)

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
        rate_limit=_number(path, data, "RATE_LIMIT", 1.0, 0.0),
        rate_burst=int(burst),
        plugin_timeout=_number(path, data, "PLUGIN_TIMEOUT", 30.0, 0.1),
        import_timeout=_number(path, data, "IMPORT_TIMEOUT", 10.0, 0.1),
        stop_timeout=_number(path, data, "STOP_TIMEOUT", 10.0, 0.0),
        store_url=env.get("STORE_URL") or data.get("STORE_URL") or None,
        store_synchronous=sync,
        plugin_sections={k: v for k, v in data.items() if isinstance(v, dict)},
    )

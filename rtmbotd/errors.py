"""Typed errors raised below the CLI; `cli.py` alone maps them to exit codes."""


class RtmbotdError(Exception):
    """Base of every error rtmbotd raises on purpose."""


class ConfigError(RtmbotdError):
    """The configuration file or environment is invalid; the message names the key."""


class PluginLoadError(RtmbotdError):
    """One or more plugins failed to load; `errors` maps plugin name to reason."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {why}" for name, why in sorted(self.errors.items())))


class StoreError(RtmbotdError):
    """The plugin store cannot be opened or is damaged."""

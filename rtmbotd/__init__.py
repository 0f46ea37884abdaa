"""rtmbotd: run python-rtmbot style Slack bot plugins as a Linux service."""
__version__ = "0.1.0"

from rtmbotd.runtime.compat import Job, Plugin  # noqa: E402  (public plugin API)

__all__ = ["Job", "Plugin", "__version__"]

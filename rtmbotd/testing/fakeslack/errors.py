"""The fake Web API's refusals."""
from __future__ import annotations


class WebApiError(Exception):
    """An `{"ok": false, "error": …}` answer, with its HTTP status and Retry-After."""

    def __init__(self, error: str, *, status: int = 200, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after

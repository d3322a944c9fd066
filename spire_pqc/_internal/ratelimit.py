"""One log line per interval for events an outsider can trigger at will.

A peer that floods a server with aborted handshakes, malformed frames or connections beyond a cap
must not be able to fill the disk through the server's log. Each kind of such event gets at most one
line per ``interval`` (without a traceback); the lines that were held back are counted and reported
with the next line of that kind, so nothing is hidden, only summarised. Counting for metrics is the
caller's job (every event, not only the logged ones).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL = 10.0
# Distinct kinds are chosen by the code, not by peers, but keep the table bounded regardless.
_MAX_KINDS = 256


@dataclass
class _Window:
    next_allowed: float
    suppressed: int = 0


class LogLimiter:
    """``limiter.log(logger, level, kind, msg, *args)``: logs unless ``kind`` was logged recently."""

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, kind: str) -> int | None:
        """None if ``kind`` was let through within the interval (counted as held back); otherwise the
        number of events of that kind held back since the previous one let through."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is not None and now < window.next_allowed:
            window.suppressed += 1
            return None
        if window is None and len(self._windows) >= _MAX_KINDS:
            self._windows.clear()
        self._windows[kind] = _Window(now + self.interval)
        return window.suppressed if window is not None else 0

    def log(self, logger: logging.Logger, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log one line (never with a traceback) if ``kind`` is due; return whether it was logged."""
        suppressed = self.allow(kind)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d more like it since the previous line)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)
        return True


class RateLimitFilter(logging.Filter):
    """A logging filter with the same rule, for loggers of libraries (grpclib, asyncio) whose calls we
    do not control: one record per logger and message template per interval."""

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        super().__init__()
        self._limiter = LogLimiter(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self._limiter.allow(f"{record.name}:{record.msg}")
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more like it since the previous line)"
        return True

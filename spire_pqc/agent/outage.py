"""Log a condition once when it begins and once when it ends, however often it recurs in between.

A tunnel refusing every connection while its credentials are missing, or an identity stream retrying
while the SPIRE agent is down, would otherwise write a warning per occurrence: a flood
that an attacker can also drive by simply connecting. :class:`Outage` keeps the first occurrence at
WARNING, later ones at DEBUG, and one INFO line with the count when the condition clears.
"""

from __future__ import annotations

import logging


class Outage:
    """One condition of one component (``what`` names both in the log lines)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._count = 0

    @property
    def active(self) -> bool:
        return self._count > 0

    def hit(self, reason: object) -> None:
        """The condition occurred (again); only the first occurrence of an outage is a warning."""
        self._count += 1
        if self._count == 1:
            self._log.warning("%s: %s (logged once until it recovers)", self._what, reason)
        else:
            self._log.debug("%s: %s (occurrence %d)", self._what, reason, self._count)

    def clear(self) -> None:
        """The condition ended (no-op when it was not active)."""
        if self._count:
            self._log.info("%s: recovered after %d occurrence(s)", self._what, self._count)
            self._count = 0

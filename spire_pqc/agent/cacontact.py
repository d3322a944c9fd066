"""The PQC CA as the node agent last saw it: what ``/ready`` follows and ``/status`` shows.

Every answer of the CA counts: an issuance (``IssuePQCSVID``) and the periodic PQC bundle poll
(``FetchPQCBundle``, every ``pqc.bundle_refresh_interval``). A refusal is not a success: a CA that
refuses this agent (not in ``authorized_agents``, an untrusted SVID) is as useless as one that is down.
The CA is *answering* while its last successful answer is at most ``pqc.ca_ready_window`` old, so a
single lost poll does not flap readiness, and a CA that is down or refusing makes ``/ready`` 503 at
most one window after its last good answer.

Example::

    contact = CAContact("pqc-ca.example.org:8444", window=dt.timedelta(seconds=90))
    contact.failed("PQC CA pqc-ca.example.org:8444: UNAVAILABLE: cannot reach …")
    contact.answering()  # False: it never answered
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


class CAContact:
    """Last success, last failure and its error, and the CA's clock as its last bundle poll told."""

    def __init__(
        self,
        address: str,
        *,
        window: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.address = address
        self.window = window
        self._clock = clock
        self.last_success: dt.datetime | None = None
        self.last_failure: dt.datetime | None = None
        self.last_error: str | None = None
        self.clock_skew: dt.timedelta | None = None  # the CA's clock minus ours (None: not measured)

    def succeeded(self, *, skew: dt.timedelta | None = None) -> None:
        """The CA answered (issued, or sent its bundle); ``skew`` when the answer carried its time."""
        self.last_success = self._clock()
        if skew is not None:
            self.clock_skew = skew

    def failed(self, error: str) -> None:
        """The CA could not be reached, refused, or answered with something unusable."""
        self.last_failure = self._clock()
        self.last_error = error

    def answering(self) -> bool:
        """Whether the last successful answer is at most ``window`` old."""
        return self.last_success is not None and self._clock() - self.last_success <= self.window

    def status(self) -> dict[str, Any]:
        """The ``ca`` part of the status document."""

        def iso(moment: dt.datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        failing = self.last_failure is not None and (
            self.last_success is None or self.last_failure > self.last_success
        )
        return {
            "address": self.address,
            "answering": self.answering(),
            "ready_window_seconds": self.window.total_seconds(),
            "last_success": iso(self.last_success),
            "last_failure": iso(self.last_failure),
            # The error of the last contact if it failed; None once the CA answered again.
            "last_error": self.last_error if failing else None,
            "clock_skew_seconds": (
                round(self.clock_skew.total_seconds(), 3) if self.clock_skew is not None else None
            ),
        }

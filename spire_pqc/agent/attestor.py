"""Unix workload attestation for the dev source: a caller's pid/uid/gid → selectors.

The selector spelling follows SPIRE's ``unix`` workload attestor (``unix:uid:1000``,
``unix:user:alice``, ``unix:gid:1000``, ``unix:group:staff``) so entries read the same in both
worlds. The SPIRE source does not use this module: SPIRE attests the PID itself.
"""

from __future__ import annotations

import contextlib
import grp
import pwd
from collections.abc import Callable, Iterable

from spire_pqc.agent.model import Caller

Attestor = Callable[[Caller], frozenset[str]]


def unix_selectors(caller: Caller) -> frozenset[str]:
    """uid, gid, and the user and group names when the system knows them."""
    selectors = {f"unix:uid:{caller.uid}", f"unix:gid:{caller.gid}"}
    with contextlib.suppress(KeyError):  # no passwd entry: the numeric selectors still apply
        selectors.add(f"unix:user:{pwd.getpwuid(caller.uid).pw_name}")
    with contextlib.suppress(KeyError):
        selectors.add(f"unix:group:{grp.getgrgid(caller.gid).gr_name}")
    return frozenset(selectors)


def matches(entry_selectors: Iterable[str], caller_selectors: frozenset[str]) -> bool:
    """SPIRE's rule: an entry applies when *all* its selectors are among the caller's."""
    wanted = frozenset(entry_selectors)
    return bool(wanted) and wanted <= caller_selectors

"""What a connection setup no longer repeats: the TLS context per SVID. (The verification memos are
guarded in tests/unit/credentials/test_verification_memo.py.)"""

from __future__ import annotations

from spire_pqc.channel.api import ContextCache
from spire_pqc.channel.sources import Mode
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World


def test_one_context_per_svid_and_mode_and_a_rotated_svid_gets_its_own(
    world: World, server_svid: HybridSvid, client_svid: HybridSvid
) -> None:
    cache = ContextCache(2)
    first = cache.get(Mode.HYBRID, server_svid)
    assert cache.get(Mode.HYBRID, server_svid) is first
    assert cache.get(Mode.PQ_TLS, server_svid) is not first  # another certificate in TLS
    rotated = world.main.mint("/server")
    assert cache.get(Mode.HYBRID, rotated) is not first
    # Bounded: the oldest entry went, so asking for it builds a new context.
    assert cache.get(Mode.HYBRID, server_svid) is not first
    assert cache.get(Mode.HYBRID, client_svid).get_cert_store() is not None

"""What a connection setup no longer repeats: the TLS context per SVID, the hop to the crypto pool for
sub-millisecond ML-DSA-65 work. (The verification memos are guarded in tests/unit/credentials.)"""

from __future__ import annotations

import asyncio
import threading

from spire_pqc.channel.api import ContextCache
from spire_pqc.channel.sources import Mode
from spire_pqc.crypto.aio import mldsa_inline, run_mldsa
from spire_pqc.svid import HybridSvid
from tests._backends import pq_backend  # noqa: F401 - fixture
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


def test_ml_dsa_steps_run_inline_only_on_a_sub_millisecond_backend(pq_backend: str) -> None:  # noqa: F811
    async def where() -> str:
        return await run_mldsa(lambda: threading.current_thread().name)

    name = asyncio.run(where())
    if pq_backend == "liboqs":
        assert mldsa_inline()
        assert name == threading.main_thread().name
    else:
        assert not mldsa_inline()
        assert name.startswith("spire-pqc-crypto")

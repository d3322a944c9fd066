"""The dev source's in-process PQC CA uses a short freshness window (DEV_FRESHNESS): it shares the
process's clock with its only client, and a 60 s window kept every ledger entry a minute past its SVID
(~9 MiB more agent RSS under fast rotation: `spire-pqc bench rotation`, README)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc.agent.config import DevSourceConfig
from spire_pqc.agent.sources.dev import DEV_FRESHNESS, DevIdentitySource
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError, RefusalReason
from spire_pqc.spiffeid import SpiffeId
from tests.unit.agent._support import dev_config, short_dir


@pytest.mark.asyncio
async def test_the_in_process_ca_refuses_a_request_older_than_its_short_window() -> None:
    config = dev_config(short_dir())
    assert isinstance(config.source, DevSourceConfig)
    source = DevIdentitySource(config.source)
    await source.start()
    try:
        leaf, key = source.classical_ca.issue_svid(SpiffeId.parse(f"spiffe://{config.source.trust_domain}/w"))
        chain = (leaf.public_bytes(serialization.Encoding.DER),)
        stale_ms = int(time.time() * 1000) - 3 * int(DEV_FRESHNESS.total_seconds() * 1000)
        assert 3 * DEV_FRESHNESS.total_seconds() < 60  # within the default window, outside the dev one
        stale = build_request(
            chain, key, MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate().public_key().spki(),
            timestamp_ms=stale_ms,
        )  # fmt: skip
        with pytest.raises(IssuanceError) as refused:
            await source.local_ca_client().issue(stale)
        assert refused.value.reason == RefusalReason.STALE
        fresh = build_request(
            chain, key, MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate().public_key().spki(),
            timestamp_ms=int(time.time() * 1000),
        )  # fmt: skip
        assert (await source.local_ca_client().issue(fresh)).pqc_svid_chain
    finally:
        await source.close()

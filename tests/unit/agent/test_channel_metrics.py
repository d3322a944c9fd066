"""The PQC guide's agent metrics, counted by real tunnels: channel establishment by mode and reason,
setup latency, ML-DSA verifications, PQ operation latency by backend, rotations (docs/metrics.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from spire_pqc.channel.context import restrict_groups
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.crypto import timing
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.status import backend_info
from spire_pqc.errors import NoHybridGroupError
from spire_pqc.spiffeid import SpiffeId
from tests.unit.agent._tunnels import CLIENT_ID, http_handler, local_server, tunnel_agent, tunnel_config
from tests.unit.channel._peers import RawServer, classical_only_context, raw_connect


async def _wait(predicate: object, what: str, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_tunnel_connection_counts_both_channel_ends_and_their_pq_work() -> None:
    async with (
        local_server(http_handler) as port,
        tunnel_agent(tunnel_config(port)) as (agent, out, _),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 200")
        writer.close()
        m = agent.metrics
        success = {"mode": "hybrid", "result": "success", "reason": "none"}
        await _wait(lambda: m.value("spire_pqc_agent_channel_establishments_total", **success) == 2, "2 ends")
        assert m.value("spire_pqc_agent_channel_setup_duration_seconds_count", mode="hybrid") == 2
        assert 0 < m.value("spire_pqc_agent_channel_setup_duration_seconds_sum", mode="hybrid") < 20
        # Each end verified the other's PQ proof (ML-DSA-65): two successful verifications, no failure.
        assert (
            m.value("spire_pqc_agent_signature_verifications_total", result="success", check="pq-proof") == 2
        )
        assert (
            m.value("spire_pqc_agent_signature_verifications_total", result="failure", check="pq-proof") == 0
        )
        # Two identities (the tunnels' two SPIFFE IDs): one rotation each, keys made on this backend.
        assert m.value("spire_pqc_agent_rotations_total", result="success") == 2
        assert m.value("spire_pqc_agent_rotations_total", result="failure") == 0
        backend = backend_info().backend
        for operation, algorithm in (("keygen", "ML-DSA-65"), ("keygen", "ML-KEM-768"), ("sign", "ML-DSA-65"),
                                     ("verify", "ML-DSA-65")):  # fmt: skip
            count = m.value(
                "spire_pqc_agent_pqc_operation_duration_seconds_count",
                operation=operation, algorithm=algorithm, backend=backend,
            )  # fmt: skip
            assert count >= 2, (operation, algorithm)
    # A stopped agent no longer observes the process's PQ operations.
    before = m.value("spire_pqc_agent_pqc_operation_duration_seconds_count",
                     operation="verify", algorithm="ML-DSA-65", backend=backend)  # fmt: skip
    key = MLDSA65PrivateKey.generate()
    key.public_key().verify(key.sign(b"m", context=b""), b"m", context=b"")
    assert m.value("spire_pqc_agent_pqc_operation_duration_seconds_count",
                   operation="verify", algorithm="ML-DSA-65", backend=backend) == before  # fmt: skip
    assert not timing._OBSERVERS.current


@pytest.mark.asyncio
async def test_a_classical_only_client_is_one_refusal_with_its_reason_and_a_log_naming_tunnel_and_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with tunnel_agent(tunnel_config(1)) as (agent, _, inb):
        svid = agent.tunnel_identity(SpiffeId.parse(CLIENT_ID)).get_hybrid_svid()
        proto: TlsProtocol = await raw_connect(classical_only_context(svid), inb.port)
        assert proto.raw is not None
        local_port = proto.raw.get_extra_info("sockname")[1]
        with pytest.raises(NoHybridGroupError):
            await proto.handshake()
        proto.abort()
        m = agent.metrics
        failure = {"mode": "hybrid", "result": "failure", "reason": "no-hybrid-group"}
        await _wait(
            lambda: m.value("spire_pqc_agent_channel_establishments_total", **failure) == 1, "refusal"
        )
        await asyncio.sleep(0.2)
        assert inb.stats.refused == 1  # counted once
        assert m.value("spire_pqc_agent_channel_establishments_total", **failure) == 1
        assert m.value("spire_pqc_agent_channel_establishments_total", mode="hybrid", result="success",
                       reason="none") == 0  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if "refused hybrid connection from" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("tunnel in: ") and f"from 127.0.0.1:{local_port}: " in lines[0]
    assert "X25519MLKEM768" in lines[0]


@pytest.mark.asyncio
async def test_an_unexpected_remote_is_an_unauthorized_id_failure() -> None:
    config = tunnel_config(1, peer_ids=["spiffe://example.org/svc/someone-else"])
    async with tunnel_agent(config) as (agent, out, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        m = agent.metrics
        failure = {"mode": "hybrid", "result": "failure", "reason": "unauthorized-id"}
        await _wait(
            lambda: m.value("spire_pqc_agent_channel_establishments_total", **failure) >= 1, "refusal"
        )
        assert out.stats.refused == 1


def _x25519_only_server_context() -> SSL.Context:
    """A TLS 1.3 server offering X25519 only (a peer without post-quantum key exchange)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "classical")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    restrict_groups(ctx, b"X25519")
    return ctx


async def _handshake(proto: TlsProtocol) -> None:
    await proto.handshake()


@pytest.mark.asyncio
async def test_the_peers_tls_alert_is_in_the_outbound_log(caplog: pytest.LogCaptureFixture) -> None:
    """A remote that offers no X25519MLKEM768 answers our ClientHello with a handshake_failure alert:
    the outbound tunnel's one log line names the tunnel, the remote's address and that alert."""
    caplog.set_level(logging.WARNING)
    async with RawServer(_x25519_only_server_context(), _handshake) as remote:
        config = tunnel_config(1)
        remote_port = remote.port
        outbound = replace(config.tunnels[0], remote=("127.0.0.1", remote_port))
        config = replace(config, tunnels=(outbound, config.tunnels[1]))
        async with tunnel_agent(config) as (agent, out, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", out.port)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await _wait(lambda: out.stats.refused == 1, "the refusal")
            await asyncio.sleep(0.2)
            assert out.stats.refused == 1 and out.stats.failed == 0  # counted once
            failures = agent.metrics.value("spire_pqc_agent_channel_establishments_total", mode="hybrid",
                                           result="failure", reason="no-hybrid-group")  # fmt: skip
            assert failures == 1
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("tunnel out: refused remote")
    ]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{remote_port}" in lines[0] and "alert handshake failure" in lines[0], lines[0]

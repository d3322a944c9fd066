"""`spire-pqc demo`: the main job on the embedded dev default, end to end, without SPIRE.

1. A dev PQC root and intermediate PQC CA, and a dev classical CA standing in for SPIRE whose SVIDs
   carry the SvidBinding through the same composer code as the SPIRE plugin.
2. A workload's classical SVID is issued; the node-agent side generates ML-DSA-65 and ML-KEM-768
   keys, proves possession of both the classical and the new key, and the PQC CA issues the PQC
   SVID and the KEM certificate.
3. The hybrid SVID is verified with the one verification function, written to disk, inspected.
4. A second workload gets its hybrid SVID, and the two talk over a ``hybrid`` channel.
5. A replayed request and a second request for the same classical SVID are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc._internal.files import atomic_write
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import IssueResponse, build_request
from spire_pqc.channel.api import open_connection, start_server
from spire_pqc.channel.authorize import authorize_id
from spire_pqc.cli.svid import LAYOUT, cmd_inspect
from spire_pqc.crypto import backend_name
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError
from spire_pqc.source import StaticHybridSource
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("demo", help="run the main job end to end on the embedded dev default")
    parser.add_argument("--out-dir", type=Path, help="where to write the hybrid SVID (default: a temp dir)")
    parser.add_argument("--trust-domain", default="example.org")
    parser.set_defaults(handler=cmd_demo)


def _step(text: str) -> None:
    print(f"\n==> {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    td = TrustDomain.parse(args.trust_domain)
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="spire-pqc-demo-"))
    print(
        "spire-pqc demo (DEV MODE: embedded development CAs, not for production); "
        f"PQ backend: {backend_name()}"
    )

    _step(f"dev PQC root + intermediate PQC CA for {td.id_string()} (ML-DSA-65)")
    hierarchy = PQCHierarchy.generate(td)
    classical_ca = DevClassicalCA(td, hierarchy.intermediate.key)
    issuer = PQCIssuer(hierarchy.intermediate, td, BundleSet.from_certificates([classical_ca.certificate]))
    print(f"    intermediate key id {hierarchy.intermediate.public_key.key_id().hex()[:16]}…")

    workload = SpiffeId.parse(f"{td.id_string()}/demo/workload")
    _step(f"classical X509-SVID for {workload} (dev classical CA + composer: SvidBinding attached)")
    started = time.perf_counter()
    classical_leaf, classical_key = classical_ca.issue_svid(workload)
    print(
        f"    issued in {(time.perf_counter() - started) * 1e3:.1f} ms, "
        f"{len(_der(classical_leaf))} B with the binding"
    )

    _step("node agent: new ML-DSA-65 + ML-KEM-768 keys, both proofs, PQC issuance")
    mldsa_key, mlkem_key = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    chain = (_der(classical_leaf),)
    request = build_request(
        chain, classical_key, mldsa_key, mlkem_key.public_key().spki(), timestamp_ms=_now_ms()
    )
    started = time.perf_counter()
    issued = issuer.issue(request)
    print(f"    PQC SVID + KEM certificate issued in {(time.perf_counter() - started) * 1e3:.1f} ms")

    load = x509.load_der_x509_certificate
    hybrid = _hybrid(workload, classical_leaf, classical_key, mldsa_key, mlkem_key, issued.response)
    _step(
        "full hybrid verification (classical chain, PQC chains, SPIFFE IDs, RelatedCertificate, "
        "binding, lifetimes)"
    )
    pqc_bundles = BundleSet.from_certificates([load(c) for c in issued.response.pqc_bundle])
    result = hybrid.verify(
        classical_bundles=BundleSet.from_certificates([classical_ca.certificate]), pqc_bundles=pqc_bundles
    )
    print(f"    OK: {result.spiffe_id}")

    _step(f"writing the hybrid SVID to {out} (keys 0600) and inspecting it")
    write_hybrid(out, hybrid, classical_ca.certificate, [load(c) for c in issued.response.pqc_bundle])
    inspect_args = argparse.Namespace(chains=[], dir=out, at=None, **dict.fromkeys(LAYOUT))
    status = cmd_inspect(inspect_args)

    _step("a hybrid TLS channel between two workloads (X25519MLKEM768 + PQ proofs on both sides)")
    peer_id = SpiffeId.parse(f"{td.id_string()}/demo/billing")
    peer_leaf, peer_key = classical_ca.issue_svid(peer_id)
    peer_mldsa, peer_mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
    peer_request = build_request(
        (_der(peer_leaf),), peer_key, peer_mldsa, peer_mlkem.public_key().spki(), timestamp_ms=_now_ms()
    )
    peer = _hybrid(peer_id, peer_leaf, peer_key, peer_mldsa, peer_mlkem, issuer.issue(peer_request).response)
    classical_bundles = BundleSet.from_certificates([classical_ca.certificate])
    asyncio.run(_channel(hybrid, peer, classical_bundles, pqc_bundles))

    _step("refusals")
    try:
        issuer.issue(request)
    except IssuanceError as exc:
        print(f"    replayed request refused: {exc}")
    other = MLDSA65PrivateKey.generate()
    second = build_request(
        chain, classical_key, other, MLKEM768PrivateKey.generate().public_key().spki(), timestamp_ms=_now_ms()
    )
    try:
        issuer.issue(second)
    except IssuanceError as exc:
        print(f"    second issuance for the same classical SVID refused: {exc}")
    return status


def _hybrid(
    spiffe_id: SpiffeId,
    leaf: x509.Certificate,
    classical_key: ec.EllipticCurvePrivateKey,
    mldsa_key: MLDSA65PrivateKey,
    mlkem_key: MLKEM768PrivateKey,
    response: IssueResponse,
) -> HybridSvid:
    """What the node agent assembles for a workload: its classical SVID plus the CA's answer."""
    load = x509.load_der_x509_certificate
    return HybridSvid(
        spiffe_id=spiffe_id,
        classical_chain=(leaf,),
        classical_key=classical_key,
        pqc_chain=tuple(load(c) for c in response.pqc_svid_chain),
        pqc_key=mldsa_key,
        kem_chain=tuple(load(c) for c in response.kem_certificate_chain),
        kem_key=mlkem_key,
    )


async def _channel(client: HybridSvid, server: HybridSvid, classical: BundleSet, pqc: BundleSet) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read(64)).upper())
        await writer.drain()
        writer.close()

    listener = await start_server(
        echo, "127.0.0.1", 0, source=StaticHybridSource(server, classical, pqc),
        authorizer=authorize_id(client.spiffe_id),
    )  # fmt: skip
    try:
        started = time.perf_counter()
        reader, writer = await open_connection(
            "127.0.0.1", listener.port, source=StaticHybridSource(client, classical, pqc),
            authorizer=authorize_id(server.spiffe_id),
        )  # fmt: skip
        writer.write(b"hello, post-quantum world")
        await writer.drain()
        reply = await reader.read(64)
        elapsed = (time.perf_counter() - started) * 1e3
        print(f"    {client.spiffe_id} -> {writer.peer_id()}: mode {writer.mode.value}, group {writer.group}")
        print(f"    echoed {reply.decode()!r} after {elapsed:.1f} ms (both PQ proofs verified first)")
        writer.close()
        await writer.wait_closed()
    finally:
        listener.close()
        await listener.wait_closed()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _pem(certificates: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def write_hybrid(
    out: Path, hybrid: HybridSvid, classical_root: x509.Certificate, pqc_roots: Iterable[x509.Certificate]
) -> None:
    """Write a hybrid SVID directory (the layout `spire-pqc svid inspect --dir` reads); keys 0600."""
    classical_key_pem = hybrid.classical_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(out / LAYOUT["classical"], _pem(hybrid.classical_chain), mode=0o644)
    atomic_write(out / "svid.key", classical_key_pem, mode=0o600)
    atomic_write(out / LAYOUT["pqc"], _pem(hybrid.pqc_chain), mode=0o644)
    atomic_write(out / "pqc_svid.key", hybrid.pqc_key.pem(NoEncryption()), mode=0o600)
    atomic_write(out / LAYOUT["kem"], _pem(hybrid.kem_chain), mode=0o644)
    atomic_write(out / "kem.key", hybrid.kem_key.pem(NoEncryption()), mode=0o600)
    atomic_write(out / LAYOUT["bundle"], _pem([classical_root]), mode=0o644)
    atomic_write(out / LAYOUT["pqc_bundle"], _pem(pqc_roots), mode=0o644)

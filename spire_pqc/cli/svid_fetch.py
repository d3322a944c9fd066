"""`spire-pqc svid fetch --write DIR`: the hybrid equivalent of `spire-agent api fetch x509 -write DIR`.

Asks the node agent (``--socket``, default ``SPIFFE_ENDPOINT_SOCKET``) for this process's hybrid SVIDs
over the hybrid extension API, verifies them, and writes, in the layout `spire-pqc svid inspect --dir`
reads (the default SVID in DIR, any further one in ``DIR/svid-<n>``):

- ``svid.pem`` / ``svid.key``: the classical X509-SVID chain and its key (PKCS#8);
- ``pqc_svid.pem`` / ``pqc_svid.key``: the ML-DSA-65 PQC SVID chain and its key (seed-form PKCS#8);
- ``kem.pem`` / ``kem.key``: the ML-KEM-768 KEM certificate chain and its key (seed-form PKCS#8);
- ``bundle.pem`` / ``pqc_bundle.pem``: the classical and PQC bundles of the SVID's trust domain;
- ``federated_bundle.<trust domain>.pem`` / ``federated_pqc_bundle.<trust domain>.pem``: the others.

Keys are written mode 0600, certificates and bundles 0644, each atomically. DIR must be a real directory
(not a symbolic link) owned by the caller (or root) that no other user can write to, or not exist yet:
otherwise another local user could swap a file or the directory itself between our writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.files import atomic_write
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.errors import KeyFilePermissionError, UnavailableError
from spire_pqc.svid import HybridSvid
from spire_pqc.workload.client import HybridUpdate, WorkloadClient

PEM = serialization.Encoding.PEM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fetch = sub.add_parser("fetch", help="fetch this process's hybrid SVIDs from the agent and write them")
    fetch.add_argument("--socket", help="the agent's Workload API address (default: SPIFFE_ENDPOINT_SOCKET)")
    fetch.add_argument("--write", type=Path, required=True, metavar="DIR", help="directory to write into")
    fetch.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the agent")
    fetch.set_defaults(handler=cmd_fetch)


async def _fetch(address: str | None, timeout: float) -> HybridUpdate:
    """This process's hybrid SVIDs; AuthorizationError ("no identity issued") when no registration entry
    matches it, UnavailableError when the agent cannot be reached or has none for it within ``timeout``."""
    client = WorkloadClient(address)
    try:
        async with asyncio.timeout(timeout):
            return await client.fetch_hybrid_svids()
    except TimeoutError:
        raise UnavailableError(
            f"no hybrid SVID from the agent at {client.endpoint} within {timeout:g}s (it has no PQC "
            "credentials for this process yet: its /status and log say why)"
        ) from None
    finally:
        client.close()


def _chain(svid_chain: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in svid_chain)


def _output_directory(directory: Path) -> None:
    """Create ``directory`` or check that only the caller (or root) controls it."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        directory.mkdir(mode=0o755, parents=True)
        info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise KeyFilePermissionError(
            "is a symbolic link; give the directory's real path", path=str(directory)
        )
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFilePermissionError("is not a directory", path=str(directory))
    if info.st_uid not in (os.geteuid(), 0):
        raise KeyFilePermissionError(
            f"is owned by uid {info.st_uid}, not by this user; write into a directory of your own",
            path=str(directory),
        )
    if info.st_mode & 0o022:
        raise KeyFilePermissionError(
            f"mode {stat.S_IMODE(info.st_mode):04o} lets other users replace files in it; chmod go-w it",
            path=str(directory),
        )


def write_svid(directory: Path, svid: HybridSvid, update: HybridUpdate) -> list[Path]:
    _output_directory(directory)
    classical_key = svid.classical_key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {
        "svid.pem": (_chain(svid.classical_chain), 0o644),
        "svid.key": (classical_key, 0o600),
        "pqc_svid.pem": (_chain(svid.pqc_chain), 0o644),
        "pqc_svid.key": (svid.pqc_key.pem(NoEncryption()), 0o600),
        "kem.pem": (_chain(svid.kem_chain), 0o644),
        "kem.key": (svid.kem_key.pem(NoEncryption()), 0o600),
    }
    own = svid.spiffe_id.trust_domain
    for name, bundles in (("bundle", update.classical_bundles), ("pqc_bundle", update.pqc_bundles)):
        for bundle in bundles:
            target = (
                f"{name}.pem" if bundle.trust_domain == own else f"federated_{name}.{bundle.trust_domain}.pem"
            )
            files[target] = (bundle.to_pem(), 0o644)
    written = []
    for name, (data, mode) in files.items():
        atomic_write(directory / name, data, mode=mode)
        written.append(directory / name)
    return written


def cmd_fetch(args: argparse.Namespace) -> int:
    update = asyncio.run(_fetch(args.socket, args.timeout))
    for svid in update.svids:
        svid.verify(classical_bundles=update.classical_bundles, pqc_bundles=update.pqc_bundles)
    for index, svid in enumerate(update.svids):
        directory = args.write if index == 0 else args.write / f"svid-{index}"
        write_svid(directory, svid, update)
        print(f"{svid.spiffe_id}: written to {directory} (valid until {svid.not_after.isoformat()})")
    return 0

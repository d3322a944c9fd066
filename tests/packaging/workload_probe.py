"""A workload run by the *installed* interpreter (``python -I``): fetch the hybrid SVID from the agent
with the installed SDK, verify it against the trust anchors given on the command line (SPIRE's bundle
and the PQC root, read independently of the agent), and print what it got as JSON.

Usage: python -I workload_probe.py SOCKET_URI SPIFFE_ID CLASSICAL_BUNDLE_PEM PQC_ROOT_PEM
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from cryptography import x509

import spire_pqc
from spire_pqc.bundle import BundleSet
from spire_pqc.workload.source import HybridX509Source


async def probe(address: str, spiffe_id: str, classical_pem: Path, pqc_pem: Path) -> dict[str, object]:
    classical = BundleSet.from_certificates(x509.load_pem_x509_certificates(classical_pem.read_bytes()))
    pqc = BundleSet.from_certificates(x509.load_pem_x509_certificates(pqc_pem.read_bytes()))
    source = HybridX509Source(address=address)
    try:
        await source.start(timeout=120)
        svid = next(s for s in source.svids if str(s.spiffe_id) == spiffe_id)
        verified = svid.verify(classical_bundles=classical, pqc_bundles=pqc)
        return {
            "package": spire_pqc.__file__,
            "prefix": sys.prefix,
            "spiffe_id": str(verified.spiffe_id),
            "pqc_leaf_serial": svid.pqc_chain[0].serial_number,
            "kem_leaf_serial": svid.kem_chain[0].serial_number,
        }
    finally:
        await source.close()


def main() -> None:
    address, spiffe_id, classical_pem, pqc_pem = sys.argv[1:5]
    print(json.dumps(asyncio.run(probe(address, spiffe_id, Path(classical_pem), Path(pqc_pem)))))


if __name__ == "__main__":
    main()

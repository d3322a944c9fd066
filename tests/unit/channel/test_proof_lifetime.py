"""The hybrid-mode PQ proof is checked by the same function as a hybrid SVID (svid.py): a PQC SVID
that outlives the classical SVID of the TLS session is refused, as it is in a hybrid SVID."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from spire_pqc.channel import proof as pq
from spire_pqc.errors import LifetimeError
from spire_pqc.svid import der
from spire_pqc.x509 import certs
from tests.unit.channel._creds import World
from tests.unit.credentials.pki import mldsa_signer, public_key_object

EXPORTER = bytes(range(32))


def _reissued(leaf: x509.Certificate, world: World, not_after: dt.datetime) -> x509.Certificate:
    """``leaf`` signed again by its intermediate with another notAfter (every extension kept)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(public_key_object(certs.spki_der(leaf)))
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(not_after)
    )
    for ext in leaf.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(mldsa_signer(world.main.hierarchy.intermediate.key), None)  # type: ignore[arg-type]


def test_proof_with_a_pqc_svid_outliving_the_classical_svid_is_refused(world: World) -> None:
    svid = world.main.mint("/short")
    classical_end = svid.classical_chain[0].not_valid_after_utc
    leaf = _reissued(svid.pqc_chain[0], world, classical_end + dt.timedelta(hours=1))
    chain = (leaf, *svid.pqc_chain[1:])
    signature = svid.pqc_key.sign(pq.signed_message(EXPORTER, signer_role="client"), context=pq.CONTEXT)
    with pytest.raises(LifetimeError, match="PQC SVID notAfter") as refused:
        pq.verify_proof(
            pq.Proof(chain, signature), tls_id=svid.spiffe_id, tls_leaf=svid.classical_chain[0],
            exporter_value=EXPORTER, signer_role="client", pqc_bundles=world.pqc_bundles,
        )  # fmt: skip
    assert refused.value.spiffe_id == str(svid.spiffe_id)
    # The same chain with the issued lifetime passes: only the lifetime made the difference.
    same = _reissued(svid.pqc_chain[0], world, svid.pqc_chain[0].not_valid_after_utc)
    assert der(same) != der(svid.pqc_chain[0])
    pq.verify_proof(
        pq.Proof((same, *svid.pqc_chain[1:]), signature), tls_id=svid.spiffe_id, tls_leaf=svid.classical_chain[0],
        exporter_value=EXPORTER, signer_role="client", pqc_bundles=world.pqc_bundles,
    )  # fmt: skip

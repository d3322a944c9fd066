"""Property test: verifying a hostile signed PQC bundle raises only spire-pqc errors, in time, and
never accepts anything but the genuine document."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.errors import SpirePqcError
from spire_pqc.federation.document import SignedBundle, verify_signed_bundle
from tests.unit.credentials.fuzz import PROPERTY
from tests.unit.federation.pki import RemoteDomain

REMOTE = RemoteDomain.generate()
GOOD = REMOTE.publish()

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _signed(draw: st.DrawFn) -> SignedBundle:
    doc = json.loads(GOOD.document)
    for member in draw(
        st.lists(st.sampled_from(["spiffe_sequence", "spiffe_refresh_hint", "keys", "extra"]), max_size=2)
    ):
        doc[member] = draw(_JSON | st.sampled_from([0, 2**64, -1, []]))
    if isinstance(doc.get("keys"), list) and doc["keys"] and draw(st.booleans()):
        entry = doc["keys"][draw(st.integers(0, len(doc["keys"]) - 1))]
        if isinstance(entry, dict):
            for member in draw(
                st.lists(st.sampled_from(["kty", "use", "x5c", "kid", "pub", "alg"]), max_size=2)
            ):
                entry[member] = draw(_JSON | st.sampled_from(["AKP", "x509-svid", "jwt-svid", ["AAAA"]]))
    document = draw(
        st.sampled_from([json.dumps(doc).encode(), GOOD.document, GOOD.document[:-2], b"{}", b"\xff"])
    )
    head, _, signature = GOOD.signature.split(".")
    sig = draw(
        st.sampled_from(
            [GOOD.signature, "", f"{head}..", f"..{signature}", f"{head}.e30.{signature}", "a.b.c"]
        )
        | st.text(max_size=30)
    )
    return SignedBundle(document, sig)


@PROPERTY
@given(_signed())
def test_verify_raises_only_spire_pqc_errors(signed: SignedBundle) -> None:
    try:
        bundle = verify_signed_bundle(REMOTE.td, signed, trusted_roots=REMOTE.roots)
    except SpirePqcError:
        return
    assert signed == GOOD
    assert bundle.sequence == 1

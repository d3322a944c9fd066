"""PQ-signed and PQ-sealed messages: round trips and each refusal with its typed error."""

from __future__ import annotations

import re

import pytest

from spire_pqc.channel.authorize import authorize_id, authorize_member_of
from spire_pqc.channel.messages import open_sealed, seal, sign_message, verify_message
from spire_pqc.crypto.mlkem import CIPHERTEXT_LEN
from spire_pqc.errors import (
    AlgorithmError,
    AuthorizationError,
    ChainError,
    DecryptionError,
    IdentityMismatchError,
    MalformedCredentialError,
    MessageSignatureError,
)
from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World


def test_signed_message_round_trip(world: World, server_svid: HybridSvid) -> None:
    blob = sign_message(server_svid, b"deploy v42")
    signer = verify_message(
        b"deploy v42", blob, pqc_bundles=world.pqc_bundles, authorizer=authorize_id(server_svid.spiffe_id)
    )
    assert signer == server_svid.spiffe_id


def test_signed_message_refusals(world: World, server_svid: HybridSvid) -> None:
    blob = sign_message(server_svid, b"deploy v42")
    allow = authorize_id(server_svid.spiffe_id)
    with pytest.raises(MessageSignatureError):
        verify_message(b"deploy v43", blob, pqc_bundles=world.pqc_bundles, authorizer=allow)
    with pytest.raises(AuthorizationError):
        verify_message(
            b"deploy v42", blob, pqc_bundles=world.pqc_bundles, authorizer=authorize_member_of("other.org")
        )
    only_other = world.other.pqc_bundle
    with pytest.raises(ChainError, match=re.escape("no PQC bundle for trust domain example.org")):
        verify_message(b"deploy v42", blob, pqc_bundles=only_other, authorizer=allow)
    tampered = bytearray(blob)
    tampered[-100] ^= 0x01
    with pytest.raises(MessageSignatureError):
        verify_message(b"deploy v42", bytes(tampered), pqc_bundles=world.pqc_bundles, authorizer=allow)
    with pytest.raises(MalformedCredentialError):
        verify_message(b"deploy v42", blob[:-1], pqc_bundles=world.pqc_bundles, authorizer=allow)


def test_seal_round_trip(world: World, server_svid: HybridSvid, client_svid: HybridSvid) -> None:
    envelope = seal(
        b"secret for the server", sender=client_svid, recipient_kem_chain=server_svid.kem_chain,
        pqc_bundles=world.pqc_bundles, authorizer=authorize_id(server_svid.spiffe_id),
    )  # fmt: skip
    assert b"secret for the server" not in envelope
    sender, plaintext = open_sealed(
        envelope,
        recipient=server_svid,
        pqc_bundles=world.pqc_bundles,
        authorizer=authorize_id(client_svid.spiffe_id),
    )
    assert (sender, plaintext) == (client_svid.spiffe_id, b"secret for the server")


def test_seal_refusals(world: World, server_svid: HybridSvid, client_svid: HybridSvid) -> None:
    def sealed() -> bytes:
        return seal(
            b"secret", sender=client_svid, recipient_kem_chain=server_svid.kem_chain,
            pqc_bundles=world.pqc_bundles, authorizer=authorize_id(server_svid.spiffe_id),
        )  # fmt: skip

    allow_client = authorize_id(client_svid.spiffe_id)
    with pytest.raises(AuthorizationError):  # the sender refuses an unexpected recipient
        seal(
            b"secret", sender=client_svid, recipient_kem_chain=server_svid.kem_chain,
            pqc_bundles=world.pqc_bundles, authorizer=authorize_id("spiffe://example.org/someone-else"),
        )  # fmt: skip
    with pytest.raises(AlgorithmError):  # a signing certificate is not an encryption key
        seal(
            b"secret", sender=client_svid, recipient_kem_chain=server_svid.pqc_chain,
            pqc_bundles=world.pqc_bundles, authorizer=authorize_id(server_svid.spiffe_id),
        )  # fmt: skip
    with pytest.raises(IdentityMismatchError):  # not the recipient
        open_sealed(sealed(), recipient=client_svid, pqc_bundles=world.pqc_bundles, authorizer=allow_client)
    envelope = bytearray(sealed())
    envelope[-1] ^= 0x01
    with pytest.raises(DecryptionError):
        open_sealed(
            bytes(envelope), recipient=server_svid, pqc_bundles=world.pqc_bundles, authorizer=allow_client
        )
    envelope = bytearray(sealed())
    envelope[-(16 + 20)] ^= 0x01  # a ciphertext byte before the GCM tag
    with pytest.raises(DecryptionError):
        open_sealed(
            bytes(envelope), recipient=server_svid, pqc_bundles=world.pqc_bundles, authorizer=allow_client
        )
    # The sender ID in the header is authenticated: rewriting it breaks decryption (AAD + KDF).
    original = sealed()
    forged = original.replace(str(client_svid.spiffe_id).encode(), b"spiffe://example.org/forged", 1)
    with pytest.raises(DecryptionError):
        open_sealed(forged, recipient=server_svid, pqc_bundles=world.pqc_bundles, authorizer=allow_client)
    with pytest.raises(AuthorizationError):  # the recipient refuses an unexpected sender
        open_sealed(
            original, recipient=server_svid, pqc_bundles=world.pqc_bundles,
            authorizer=authorize_id("spiffe://example.org/someone-else"),
        )  # fmt: skip
    with pytest.raises(MalformedCredentialError):
        open_sealed(original[: 40 + CIPHERTEXT_LEN // 2], recipient=server_svid, pqc_bundles=world.pqc_bundles,
                    authorizer=allow_client)  # fmt: skip

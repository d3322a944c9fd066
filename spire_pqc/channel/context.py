"""pyOpenSSL contexts for the channel: TLS 1.3 only, X25519MLKEM768 only, SVIDs as certificates.

Certificate *verification* is deliberately not OpenSSL's: the verify callback accepts every chain
at the OpenSSL layer, and the channel verifies the peer right after the handshake against the
bundle of the peer's own trust domain (never one store merging every trust domain's roots, as
py-spiffe's spiffe-tls 0.4 ``create_ssl_context`` does, letting a federated CA vouch for another
trust domain's IDs), then runs the authorizer. No
application byte is delivered before that.

Modes are negotiated with ALPN (:attr:`Mode.alpn`): a ``hybrid`` or ``pq-tls`` client offers its mode's
protocol ID and a server of that mode selects it; a server refuses a client asking for another of our
modes (or, in ``hybrid``, for anything else) with a ``no_application_protocol`` alert during the
handshake. ``spiffe`` offers no ALPN and ignores foreign protocol IDs, like any standard SPIFFE peer;
``pq-tls`` also accepts peers that send or select no ALPN (plain OpenSSL ≥ 3.5). A peer that sends or
selects no ALPN facing ``hybrid`` (a standard SPIFFE peer) is refused by :func:`check_negotiated_mode`
right after the handshake, before any byte is written.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto

from spire_pqc.channel.sources import MODE_OF_ALPN, Mode
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.errors import ChannelError, HandshakeError, ModeMismatchError, NoHybridGroupError
from spire_pqc.svid import HybridSvid

HYBRID_GROUP = "X25519MLKEM768"
# OpenSSL's SSL_MODE_NO_AUTO_CHAIN (ssl.h); cryptography's binding does not export the name.
_SSL_MODE_NO_AUTO_CHAIN = 0x00000008


def restrict_groups(ctx: SSL.Context, groups: bytes = HYBRID_GROUP.encode()) -> None:
    """Offer/accept only ``groups``. pyOpenSSL 26.4 has no public group API (pyca/pyopenssl#1477),
    so this is OpenSSL's ``SSL_CTX_set1_curves_list`` through the private binding (with it, a
    PQ-only side and an X25519-only side fail with "no suitable key share"); hybrid groups exist
    only by name."""
    lib = SSL._lib  # type: ignore[attr-defined]
    setter = getattr(lib, "SSL_CTX_set1_groups_list", None) or lib.SSL_CTX_set1_curves_list
    if setter(ctx._context, groups) != 1:
        raise ChannelError(f"this OpenSSL cannot restrict TLS key exchange to {groups.decode()}")


def _accept_at_openssl_layer(conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int) -> bool:
    # The real verification runs after the handshake (module docstring); OpenSSL only has to ask
    # for and receive the peer's chain.
    return True


def base_context() -> SSL.Context:
    """TLS 1.3 only, hybrid group only, mutual authentication requested, no resumption."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    restrict_groups(ctx)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_at_openssl_layer)
    # No resumption: a resumed session would skip certificate authentication, and ML-DSA tickets
    # are large (reference §4: 11.5 KB of ticket traffic per ML-DSA-65 mTLS connection).
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return ctx


def _use_pqc_key(ctx: SSL.Context, svid: HybridSvid) -> None:
    # crypto.PKey.from_cryptography_key rejects ML-DSA keys (reference §5 item 1, API notes), but
    # OpenSSL's own PEM reader takes the seed-form PKCS#8 that MLDSA65PrivateKey writes. Passing
    # the resulting PKey to Context.use_privatekey is deprecated in pyOpenSSL 26, so the key is
    # installed with the same OpenSSL call that method makes (no key file is ever written).
    pkey = crypto.load_privatekey(crypto.FILETYPE_PEM, svid.pqc_key.pem(NoEncryption()))
    if SSL._lib.SSL_CTX_use_PrivateKey(ctx._context, pkey._pkey) != 1:  # type: ignore[attr-defined]
        raise ChannelError("OpenSSL refused the ML-DSA-65 private key")


def _use_chain(ctx: SSL.Context, chain: tuple[x509.Certificate, ...]) -> None:
    ctx.use_certificate(chain[0])
    for cert in chain[1:]:
        ctx.add_extra_chain_cert(cert)
    # Send exactly the SVID chain: do not let OpenSSL add certificates from a verify store.
    ctx.set_mode(_SSL_MODE_NO_AUTO_CHAIN)


def _describe(offered: list[bytes]) -> str:
    modes = sorted({MODE_OF_ALPN[p].value for p in offered if p in MODE_OF_ALPN})
    ids = ", ".join(repr(p.decode("ascii", "replace")[:40]) for p in offered[:8])
    return f"channel mode {' / '.join(modes)} (ALPN {ids})" if modes else f"ALPN {ids}"


_AlpnSelector = Callable[[SSL.Connection, list[bytes]], "bytes | SSL._NoOverlappingProtocols"]


def _alpn_selector(mode: Mode) -> _AlpnSelector:
    def select(conn: SSL.Connection, offered: list[bytes]) -> bytes | SSL._NoOverlappingProtocols:
        ours = mode.alpn
        if ours is not None and ours in offered:
            return ours
        if not mode.requires_alpn and not any(p in MODE_OF_ALPN for p in offered):
            return SSL.NO_OVERLAPPING_PROTOCOLS  # a standard client's own protocols: continue without ALPN
        # Raised inside OpenSSL's callback: OpenSSL sends no_application_protocol, pyOpenSSL re-raises it.
        raise ModeMismatchError(
            f"the client asks for {_describe(offered)}; this server runs {mode.value} mode"
        )

    return select


def classical_context(chain: tuple[x509.Certificate, ...], key: PrivateKeyTypes) -> SSL.Context:
    """:func:`base_context` presenting a classical X509-SVID (leaf first) and its key."""
    ctx = base_context()
    _use_chain(ctx, chain)
    ctx.use_privatekey(key)  # type: ignore[arg-type]  # EC/RSA/Ed25519 SVID keys
    ctx.check_privatekey()
    return ctx


def context_for(mode: Mode, svid: HybridSvid) -> SSL.Context:
    """A context presenting ``svid``'s classical chain (hybrid, spiffe) or PQC chain (pq-tls), with
    the mode's ALPN offered (as a client) and enforced (as a server)."""
    if mode is Mode.PQ_TLS:
        ctx = base_context()
        _use_chain(ctx, svid.pqc_chain)
        _use_pqc_key(ctx, svid)
        ctx.check_privatekey()
    else:
        ctx = classical_context(svid.classical_chain, svid.classical_key)
    if mode.alpn is not None:
        ctx.set_alpn_protos([mode.alpn])
    ctx.set_alpn_select_callback(_alpn_selector(mode))
    return ctx


def check_negotiated_mode(mode: Mode, conn: SSL.Connection, *, server_side: bool) -> None:
    """After the handshake, before any byte: the peer negotiated ``mode`` (see the module docstring)."""
    selected = conn.get_alpn_proto_negotiated() or None
    if selected == mode.alpn:
        return
    if selected is not None:
        raise ModeMismatchError(
            f"the peer negotiated {_describe([selected])}; this side runs {mode.value} mode"
        )
    if not mode.requires_alpn:
        return  # a plain OpenSSL peer of pq-tls mode
    if server_side:
        raise ModeMismatchError(
            f"the client offered no ALPN: it speaks standard SPIFFE TLS (spiffe mode), not {mode.value} mode"
        )
    raise ModeMismatchError(
        f"the server did not select ALPN {mode.alpn!r}: it speaks standard SPIFFE TLS (spiffe mode) or an "
        f"older spire-pqc, not {mode.value} mode"
    )


def _reasons(exc: SSL.Error) -> str:
    """OpenSSL's reasons from a pyOpenSSL error, whatever its shape.

    ``SSL.Error`` carries a list of ``(library, function, reason)`` tuples, but ``SysCallError``
    carries ``(errno, text)`` — e.g. ``(-1, 'Unexpected EOF')`` when the peer closes mid-handshake —
    and other shapes exist; none of them may turn a peer's abort into an exception of ours.
    """
    if isinstance(exc, SSL.SysCallError):
        text = exc.args[1] if len(exc.args) > 1 else None
        return f"the peer closed the connection ({text or 'unexpected EOF'})"
    items = exc.args[0] if exc.args else None
    if isinstance(items, list):
        reasons = [str(item[2]) for item in items if isinstance(item, tuple | list) and len(item) > 2]
        if reasons:
            return " / ".join(reasons)
    return str(exc) or type(exc).__name__


def classify_handshake_error(exc: SSL.Error, *, server_side: bool) -> HandshakeError:
    """Turn OpenSSL's error stack into a typed error; a missing hybrid group gets its own type."""
    reasons = _reasons(exc)
    if "no suitable key share" in reasons or "no shared group" in reasons:
        return NoHybridGroupError(
            f"the peer offered no {HYBRID_GROUP} key exchange (classical-only peer?); "
            f"a classical key exchange is never negotiated ({reasons})"
        )
    if not server_side and "alert handshake failure" in reasons:
        # We offer only X25519MLKEM768, and a server that supports no hybrid group answers the
        # ClientHello with a handshake_failure alert (reference §5 item 1, observed).
        return NoHybridGroupError(
            f"the server refused our ClientHello, which offers only {HYBRID_GROUP}; it most likely "
            f"supports no hybrid key exchange ({reasons})"
        )
    if "no application protocol" in reasons:
        return ModeMismatchError(
            f"the peer refused this side's channel mode in the handshake ({reasons}): the two ends run "
            "different modes (hybrid / spiffe / pq-tls)"
        )
    return HandshakeError(f"TLS handshake failed: {reasons}")

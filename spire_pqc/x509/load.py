"""Certificates from outside bytes: loaded and fully parsed in one place, refused with ParseError.

cryptography loads a certificate without parsing its names, extensions or public key; reading them
later raises whatever the malformed part provokes: ValueError, TypeError (a commonName encoded as a
BIT STRING), UnsupportedAlgorithm, DuplicateExtension, UnsupportedGeneralNameType; loading itself
raises InvalidVersion, which is not a ValueError. Every certificate that enters spire-pqc from a peer,
a file, a bundle or the Workload API goes through :func:`load_der_certificate` (or the PEM and
concatenated-DER forms below), so a malformed one is refused here, with its position, and never
reaches a check that reads it lazily.

Also refused: a serial number that is not positive (RFC 5280 §4.1.2.2). cryptography still loads
one but warns that a future release will refuse it, and Go (SPIRE, go-spiffe) already refuses
negative serials, so accepting it here would only defer the failure.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import threading
import time
from collections import OrderedDict

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from spire_pqc._internal.der import INTEGER, SEQUENCE, DerReader, read_integer, read_single, tlv
from spire_pqc.errors import ParseError

__all__ = [
    "CRYPTOGRAPHY_PARSE_ERRORS",
    "check_parsed",
    "load_der_certificate",
    "load_der_certificates",
    "load_pem_certificates",
]

#: What cryptography raises for a malformed certificate, when it loads one or parses a part lazily.
#: The warnings are raised (rather than printed) only where the warning filter says "error"; a
#: certificate that cryptography would refuse under that filter is refused here too.
CRYPTOGRAPHY_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UserWarning,
    CryptographyDeprecationWarning,
)

#: Certificates loaded successfully, by DER bytes and key policy, most recent last. The same peer's
#: certificates arrive on every connection and a full parse of an ML-DSA-65 certificate costs about
#: 0.2 ms; a certificate object is immutable, so handing out the same object again changes only the
#: cost (and lets identity-keyed caches such as :mod:`spire_pqc.x509.memo` recognise it). Failures
#: are never kept. Bounded: at most :data:`LOADED_CACHE_SIZE` entries (a few MB at most), and
#: certificates past their notAfter are swept out (at most once a second, when one is added): under
#: rotation they would otherwise stay, fully parsed, until 256 newer ones pushed them out.
LOADED_CACHE_SIZE = 256
_loaded: OrderedDict[tuple[bytes, bool], tuple[x509.Certificate, dt.datetime]] = OrderedDict()
_loaded_lock = threading.Lock()
_loaded_swept = [0.0]

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_PEM_END = re.compile(rb"-----END ([A-Z0-9 ]{1,64})-----")


def _serial_number(data: bytes) -> int:
    """The serial number, read with the strict DER reader before cryptography sees the bytes."""
    tbs = DerReader(read_single(data, SEQUENCE, what="Certificate")).expect(SEQUENCE, "TBSCertificate")
    fields = DerReader(tbs, what="TBSCertificate")
    if fields.peek_tag() == 0xA0:  # [0] EXPLICIT version
        fields.read()
    return read_integer(fields.expect(INTEGER, "serialNumber"), what="serialNumber")


def check_parsed(cert: x509.Certificate, *, what: str, public_key: bool = True) -> None:
    """Parse the parts cryptography parses lazily (names, extensions and, unless ``public_key`` is
    false, the public key); raise ParseError if one does not parse.

    ``public_key=False`` is for trust bundles: an authority whose key algorithm cryptography does
    not implement is kept (a verifier skips it), but a malformed key of a known algorithm is not.
    """
    try:
        _ = cert.subject, cert.issuer, cert.extensions
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise ParseError(f"{what}: not a valid X.509 certificate ({type(exc).__name__}: {exc})") from exc
    try:
        cert.public_key()
    except UnsupportedAlgorithm as exc:
        if public_key:
            raise ParseError(f"{what}: unsupported public key algorithm ({exc})") from exc
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise ParseError(f"{what}: public key does not parse ({type(exc).__name__}: {exc})") from exc


def load_der_certificate(data: bytes, *, what: str, public_key: bool = True) -> x509.Certificate:
    """One DER certificate, fully parsed (see :func:`check_parsed`); ParseError names ``what``.

    The same bytes give the same certificate object while it is in the bounded cache of loads."""
    data = bytes(data)
    key = (data, public_key)
    with _loaded_lock:
        entry = _loaded.get(key)
        if entry is not None:
            _loaded.move_to_end(key)
            return entry[0]
    cert = _load_der_certificate(data, what=what, public_key=public_key)
    with _loaded_lock:
        _loaded[key] = (cert, cert.not_valid_after_utc)
        if time.monotonic() - _loaded_swept[0] >= 1.0:
            _loaded_swept[0] = time.monotonic()
            now = dt.datetime.now(dt.UTC)
            for stale in [k for k, (_, not_after) in _loaded.items() if not_after < now]:
                del _loaded[stale]
        while len(_loaded) > LOADED_CACHE_SIZE:
            _loaded.popitem(last=False)
    return cert


def _load_der_certificate(data: bytes, *, what: str, public_key: bool) -> x509.Certificate:
    try:
        serial = _serial_number(bytes(data))
    except ParseError as exc:
        raise ParseError(f"{what}: not a valid X.509 certificate ({exc})") from exc
    if serial <= 0:
        raise ParseError(f"{what}: serial number {serial} is not positive (RFC 5280 section 4.1.2.2)")
    try:
        cert = x509.load_der_x509_certificate(bytes(data))
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise ParseError(f"{what}: not a valid X.509 certificate ({exc})") from exc
    check_parsed(cert, what=what, public_key=public_key)
    return cert


def load_der_certificates(
    data: bytes, *, what: str, max_count: int | None = None, public_key: bool = True
) -> tuple[x509.Certificate, ...]:
    """Concatenated DER certificates (the Workload API form), split by each SEQUENCE's length.

    Empty input gives an empty tuple; callers that need a certificate check for one.
    """
    reader = DerReader(data, what=what)
    certificates: list[x509.Certificate] = []
    while not reader.at_end():
        index = len(certificates)
        if max_count is not None and index >= max_count:
            raise ParseError(f"{what}: more than {max_count} certificates")
        try:
            tag, value = reader.read()
        except ParseError as exc:
            raise ParseError(f"{what}: certificate {index}: {exc}") from exc
        if tag != SEQUENCE:
            raise ParseError(f"{what}: certificate {index}: expected a SEQUENCE (0x30), got tag 0x{tag:02x}")
        # DerReader only accepts minimal lengths, so re-encoding reproduces the input bytes exactly.
        certificates.append(
            load_der_certificate(tlv(tag, value), what=f"{what}: certificate {index}", public_key=public_key)
        )
    return tuple(certificates)


def load_pem_certificates(data: bytes, *, what: str, public_key: bool = True) -> list[x509.Certificate]:
    """Every PEM ``CERTIFICATE`` block of ``data`` (text between blocks is ignored).

    Refused, naming the block: a block of another type (a private key pasted into a certificate
    file is never skipped quietly), a BEGIN line without its END line, bad base64, a bad
    certificate, and input without any certificate. Linear in the input: each block is found with
    one forward search, never by backtracking over the rest of the input.
    """
    certificates: list[x509.Certificate] = []
    position = 0
    index = 0
    while (begin := _PEM_BEGIN.search(data, position)) is not None:
        label = begin.group(1)
        end = _PEM_END.search(data, begin.end())
        if end is None:
            raise ParseError(f"{what}: PEM block {index} ({label.decode()!r}) has no END line")
        if end.group(1) != label:
            raise ParseError(f"{what}: PEM block {index} begins as {label!r} but ends as {end.group(1)!r}")
        if label != b"CERTIFICATE":
            raise ParseError(
                f"{what}: PEM block {index} is {label.decode()!r}; only CERTIFICATE blocks are accepted"
            )
        try:
            der = base64.b64decode(b"".join(data[begin.end() : end.start()].split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ParseError(f"{what}: PEM block {index} is not valid base64 ({exc})") from exc
        certificates.append(
            load_der_certificate(der, what=f"{what}: PEM block {index}", public_key=public_key)
        )
        position = end.end()
        index += 1
    if not certificates:
        raise ParseError(f"{what}: no PEM CERTIFICATE block found")
    return certificates

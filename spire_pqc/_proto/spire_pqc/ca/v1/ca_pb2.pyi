from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_REASON_UNSPECIFIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_MALFORMED: _ClassVar[RefusalReason]
    REFUSAL_REASON_STALE: _ClassVar[RefusalReason]
    REFUSAL_REASON_UNTRUSTED_SVID: _ClassVar[RefusalReason]
    REFUSAL_REASON_BINDING: _ClassVar[RefusalReason]
    REFUSAL_REASON_BAD_PROOF: _ClassVar[RefusalReason]
    REFUSAL_REASON_REPLAY: _ClassVar[RefusalReason]
    REFUSAL_REASON_DUPLICATE: _ClassVar[RefusalReason]
    REFUSAL_REASON_UNAVAILABLE: _ClassVar[RefusalReason]
    REFUSAL_REASON_UNAUTHENTICATED: _ClassVar[RefusalReason]
    REFUSAL_REASON_UNAUTHORIZED: _ClassVar[RefusalReason]
REFUSAL_REASON_UNSPECIFIED: RefusalReason
REFUSAL_REASON_MALFORMED: RefusalReason
REFUSAL_REASON_STALE: RefusalReason
REFUSAL_REASON_UNTRUSTED_SVID: RefusalReason
REFUSAL_REASON_BINDING: RefusalReason
REFUSAL_REASON_BAD_PROOF: RefusalReason
REFUSAL_REASON_REPLAY: RefusalReason
REFUSAL_REASON_DUPLICATE: RefusalReason
REFUSAL_REASON_UNAVAILABLE: RefusalReason
REFUSAL_REASON_UNAUTHENTICATED: RefusalReason
REFUSAL_REASON_UNAUTHORIZED: RefusalReason

class IssuePQCSVIDRequest(_message.Message):
    __slots__ = ("classical_svid_chain", "mldsa65_public_key", "mlkem768_public_key", "timestamp_unix_ms", "nonce", "classical_proof", "mldsa_proof")
    CLASSICAL_SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    MLDSA65_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MLKEM768_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_PROOF_FIELD_NUMBER: _ClassVar[int]
    MLDSA_PROOF_FIELD_NUMBER: _ClassVar[int]
    classical_svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    mldsa65_public_key: bytes
    mlkem768_public_key: bytes
    timestamp_unix_ms: int
    nonce: bytes
    classical_proof: bytes
    mldsa_proof: bytes
    def __init__(self, classical_svid_chain: _Optional[_Iterable[bytes]] = ..., mldsa65_public_key: _Optional[bytes] = ..., mlkem768_public_key: _Optional[bytes] = ..., timestamp_unix_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., classical_proof: _Optional[bytes] = ..., mldsa_proof: _Optional[bytes] = ...) -> None: ...

class IssuePQCSVIDResponse(_message.Message):
    __slots__ = ("pqc_svid_chain", "kem_certificate_chain", "pqc_bundle", "pqc_jwt_bundle", "revoked_intermediates")
    PQC_SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    KEM_CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PQC_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PQC_JWT_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    pqc_svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    kem_certificate_chain: _containers.RepeatedScalarFieldContainer[bytes]
    pqc_bundle: _containers.RepeatedScalarFieldContainer[bytes]
    pqc_jwt_bundle: bytes
    revoked_intermediates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pqc_svid_chain: _Optional[_Iterable[bytes]] = ..., kem_certificate_chain: _Optional[_Iterable[bytes]] = ..., pqc_bundle: _Optional[_Iterable[bytes]] = ..., pqc_jwt_bundle: _Optional[bytes] = ..., revoked_intermediates: _Optional[_Iterable[str]] = ...) -> None: ...

class SignJWTSVIDRequest(_message.Message):
    __slots__ = ("classical_token",)
    CLASSICAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    classical_token: str
    def __init__(self, classical_token: _Optional[str] = ...) -> None: ...

class SignJWTSVIDResponse(_message.Message):
    __slots__ = ("pqc_token", "pqc_jwt_bundle", "pqc_bundle")
    PQC_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PQC_JWT_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PQC_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    pqc_token: str
    pqc_jwt_bundle: bytes
    pqc_bundle: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, pqc_token: _Optional[str] = ..., pqc_jwt_bundle: _Optional[bytes] = ..., pqc_bundle: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FetchPQCBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FetchPQCBundleResponse(_message.Message):
    __slots__ = ("trust_domain", "pqc_bundle", "revoked_intermediates", "pqc_jwt_bundle", "server_time_unix_ms")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PQC_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    PQC_JWT_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    pqc_bundle: _containers.RepeatedScalarFieldContainer[bytes]
    revoked_intermediates: _containers.RepeatedScalarFieldContainer[str]
    pqc_jwt_bundle: bytes
    server_time_unix_ms: int
    def __init__(self, trust_domain: _Optional[str] = ..., pqc_bundle: _Optional[_Iterable[bytes]] = ..., revoked_intermediates: _Optional[_Iterable[str]] = ..., pqc_jwt_bundle: _Optional[bytes] = ..., server_time_unix_ms: _Optional[int] = ...) -> None: ...

class IssuanceRefusal(_message.Message):
    __slots__ = ("reason", "spiffe_id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    reason: RefusalReason
    spiffe_id: str
    def __init__(self, reason: _Optional[_Union[RefusalReason, str]] = ..., spiffe_id: _Optional[str] = ...) -> None: ...

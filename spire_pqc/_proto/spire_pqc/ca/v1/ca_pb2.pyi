from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("pqc_svid_chain", "kem_certificate_chain", "pqc_bundle")
    PQC_SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    KEM_CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PQC_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    pqc_svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    kem_certificate_chain: _containers.RepeatedScalarFieldContainer[bytes]
    pqc_bundle: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, pqc_svid_chain: _Optional[_Iterable[bytes]] = ..., kem_certificate_chain: _Optional[_Iterable[bytes]] = ..., pqc_bundle: _Optional[_Iterable[bytes]] = ...) -> None: ...

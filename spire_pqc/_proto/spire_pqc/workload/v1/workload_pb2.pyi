from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HybridSVIDRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HybridSVID(_message.Message):
    __slots__ = ("spiffe_id", "classical_chain", "classical_key", "pqc_chain", "pqc_key", "kem_certificate", "kem_key", "classical_bundle", "pqc_bundle", "hint")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_CHAIN_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_KEY_FIELD_NUMBER: _ClassVar[int]
    PQC_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PQC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEM_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    KEM_KEY_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PQC_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    classical_chain: bytes
    classical_key: bytes
    pqc_chain: bytes
    pqc_key: bytes
    kem_certificate: bytes
    kem_key: bytes
    classical_bundle: bytes
    pqc_bundle: bytes
    hint: str
    def __init__(self, spiffe_id: _Optional[str] = ..., classical_chain: _Optional[bytes] = ..., classical_key: _Optional[bytes] = ..., pqc_chain: _Optional[bytes] = ..., pqc_key: _Optional[bytes] = ..., kem_certificate: _Optional[bytes] = ..., kem_key: _Optional[bytes] = ..., classical_bundle: _Optional[bytes] = ..., pqc_bundle: _Optional[bytes] = ..., hint: _Optional[str] = ...) -> None: ...

class HybridSVIDResponse(_message.Message):
    __slots__ = ("svids", "federated_pqc_bundles", "revoked_intermediates")
    class FederatedPqcBundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SVIDS_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_PQC_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    svids: _containers.RepeatedCompositeFieldContainer[HybridSVID]
    federated_pqc_bundles: _containers.ScalarMap[str, bytes]
    revoked_intermediates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, svids: _Optional[_Iterable[_Union[HybridSVID, _Mapping]]] = ..., federated_pqc_bundles: _Optional[_Mapping[str, bytes]] = ..., revoked_intermediates: _Optional[_Iterable[str]] = ...) -> None: ...

class PQCBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PQCBundlesResponse(_message.Message):
    __slots__ = ("bundles", "revoked_intermediates")
    class BundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_INTERMEDIATES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.ScalarMap[str, bytes]
    revoked_intermediates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundles: _Optional[_Mapping[str, bytes]] = ..., revoked_intermediates: _Optional[_Iterable[str]] = ...) -> None: ...

class HybridJWTSVIDRequest(_message.Message):
    __slots__ = ("audience", "spiffe_id")
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    audience: _containers.RepeatedScalarFieldContainer[str]
    spiffe_id: str
    def __init__(self, audience: _Optional[_Iterable[str]] = ..., spiffe_id: _Optional[str] = ...) -> None: ...

class HybridJWTSVID(_message.Message):
    __slots__ = ("spiffe_id", "classical", "pqc", "hint")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_FIELD_NUMBER: _ClassVar[int]
    PQC_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    classical: str
    pqc: str
    hint: str
    def __init__(self, spiffe_id: _Optional[str] = ..., classical: _Optional[str] = ..., pqc: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class HybridJWTSVIDResponse(_message.Message):
    __slots__ = ("svids",)
    SVIDS_FIELD_NUMBER: _ClassVar[int]
    svids: _containers.RepeatedCompositeFieldContainer[HybridJWTSVID]
    def __init__(self, svids: _Optional[_Iterable[_Union[HybridJWTSVID, _Mapping]]] = ...) -> None: ...

class ValidateHybridJWTSVIDRequest(_message.Message):
    __slots__ = ("audience", "classical", "pqc")
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_FIELD_NUMBER: _ClassVar[int]
    PQC_FIELD_NUMBER: _ClassVar[int]
    audience: str
    classical: str
    pqc: str
    def __init__(self, audience: _Optional[str] = ..., classical: _Optional[str] = ..., pqc: _Optional[str] = ...) -> None: ...

class ValidateHybridJWTSVIDResponse(_message.Message):
    __slots__ = ("spiffe_id", "claims_json")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_JSON_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    claims_json: bytes
    def __init__(self, spiffe_id: _Optional[str] = ..., claims_json: _Optional[bytes] = ...) -> None: ...

class PQCJWTBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PQCJWTBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    class BundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.ScalarMap[str, bytes]
    def __init__(self, bundles: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

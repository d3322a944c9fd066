from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class X509Certificate(_message.Message):
    __slots__ = ("asn1", "tainted")
    ASN1_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    asn1: bytes
    tainted: bool
    def __init__(self, asn1: _Optional[bytes] = ..., tainted: _Optional[bool] = ...) -> None: ...

class JWTKey(_message.Message):
    __slots__ = ("public_key", "key_id", "expires_at", "tainted")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    key_id: str
    expires_at: int
    tainted: bool
    def __init__(self, public_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...

class WITKey(_message.Message):
    __slots__ = ("public_key", "key_id", "expires_at", "tainted")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    key_id: str
    expires_at: int
    tainted: bool
    def __init__(self, public_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("trust_domain", "x509_authorities", "jwt_authorities", "refresh_hint", "sequence_number", "wit_authorities")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    REFRESH_HINT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    WIT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    x509_authorities: _containers.RepeatedCompositeFieldContainer[X509Certificate]
    jwt_authorities: _containers.RepeatedCompositeFieldContainer[JWTKey]
    refresh_hint: int
    sequence_number: int
    wit_authorities: _containers.RepeatedCompositeFieldContainer[WITKey]
    def __init__(self, trust_domain: _Optional[str] = ..., x509_authorities: _Optional[_Iterable[_Union[X509Certificate, _Mapping]]] = ..., jwt_authorities: _Optional[_Iterable[_Union[JWTKey, _Mapping]]] = ..., refresh_hint: _Optional[int] = ..., sequence_number: _Optional[int] = ..., wit_authorities: _Optional[_Iterable[_Union[WITKey, _Mapping]]] = ...) -> None: ...

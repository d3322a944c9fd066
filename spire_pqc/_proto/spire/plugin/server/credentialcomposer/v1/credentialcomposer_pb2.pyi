from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributeTypeAndValue(_message.Message):
    __slots__ = ("oid", "string_value")
    OID_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    oid: str
    string_value: str
    def __init__(self, oid: _Optional[str] = ..., string_value: _Optional[str] = ...) -> None: ...

class DistinguishedName(_message.Message):
    __slots__ = ("country", "organization", "organizational_unit", "locality", "province", "street_address", "postal_code", "serial_number", "common_name", "extra_names")
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATIONAL_UNIT_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    STREET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    COMMON_NAME_FIELD_NUMBER: _ClassVar[int]
    EXTRA_NAMES_FIELD_NUMBER: _ClassVar[int]
    country: _containers.RepeatedScalarFieldContainer[str]
    organization: _containers.RepeatedScalarFieldContainer[str]
    organizational_unit: _containers.RepeatedScalarFieldContainer[str]
    locality: _containers.RepeatedScalarFieldContainer[str]
    province: _containers.RepeatedScalarFieldContainer[str]
    street_address: _containers.RepeatedScalarFieldContainer[str]
    postal_code: _containers.RepeatedScalarFieldContainer[str]
    serial_number: str
    common_name: str
    extra_names: _containers.RepeatedCompositeFieldContainer[AttributeTypeAndValue]
    def __init__(self, country: _Optional[_Iterable[str]] = ..., organization: _Optional[_Iterable[str]] = ..., organizational_unit: _Optional[_Iterable[str]] = ..., locality: _Optional[_Iterable[str]] = ..., province: _Optional[_Iterable[str]] = ..., street_address: _Optional[_Iterable[str]] = ..., postal_code: _Optional[_Iterable[str]] = ..., serial_number: _Optional[str] = ..., common_name: _Optional[str] = ..., extra_names: _Optional[_Iterable[_Union[AttributeTypeAndValue, _Mapping]]] = ...) -> None: ...

class X509Extension(_message.Message):
    __slots__ = ("oid", "value", "critical")
    OID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    oid: str
    value: bytes
    critical: bool
    def __init__(self, oid: _Optional[str] = ..., value: _Optional[bytes] = ..., critical: _Optional[bool] = ...) -> None: ...

class X509CAAttributes(_message.Message):
    __slots__ = ("subject", "policy_identifiers", "extra_extensions")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    POLICY_IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    subject: DistinguishedName
    policy_identifiers: _containers.RepeatedScalarFieldContainer[str]
    extra_extensions: _containers.RepeatedCompositeFieldContainer[X509Extension]
    def __init__(self, subject: _Optional[_Union[DistinguishedName, _Mapping]] = ..., policy_identifiers: _Optional[_Iterable[str]] = ..., extra_extensions: _Optional[_Iterable[_Union[X509Extension, _Mapping]]] = ...) -> None: ...

class X509SVIDAttributes(_message.Message):
    __slots__ = ("subject", "dns_sans", "extra_extensions")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DNS_SANS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    subject: DistinguishedName
    dns_sans: _containers.RepeatedScalarFieldContainer[str]
    extra_extensions: _containers.RepeatedCompositeFieldContainer[X509Extension]
    def __init__(self, subject: _Optional[_Union[DistinguishedName, _Mapping]] = ..., dns_sans: _Optional[_Iterable[str]] = ..., extra_extensions: _Optional[_Iterable[_Union[X509Extension, _Mapping]]] = ...) -> None: ...

class JWTSVIDAttributes(_message.Message):
    __slots__ = ("claims",)
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    claims: _struct_pb2.Struct
    def __init__(self, claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ComposeServerX509CARequest(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509CAAttributes
    def __init__(self, attributes: _Optional[_Union[X509CAAttributes, _Mapping]] = ...) -> None: ...

class ComposeServerX509CAResponse(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509CAAttributes
    def __init__(self, attributes: _Optional[_Union[X509CAAttributes, _Mapping]] = ...) -> None: ...

class ComposeServerX509SVIDRequest(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ...) -> None: ...

class ComposeServerX509SVIDResponse(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ...) -> None: ...

class ComposeAgentX509SVIDRequest(_message.Message):
    __slots__ = ("attributes", "spiffe_id", "public_key")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    spiffe_id: str
    public_key: bytes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ..., spiffe_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class ComposeAgentX509SVIDResponse(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ...) -> None: ...

class ComposeWorkloadX509SVIDRequest(_message.Message):
    __slots__ = ("attributes", "spiffe_id", "public_key")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    spiffe_id: str
    public_key: bytes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ..., spiffe_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class ComposeWorkloadX509SVIDResponse(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: X509SVIDAttributes
    def __init__(self, attributes: _Optional[_Union[X509SVIDAttributes, _Mapping]] = ...) -> None: ...

class ComposeWorkloadJWTSVIDRequest(_message.Message):
    __slots__ = ("attributes", "spiffe_id")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    attributes: JWTSVIDAttributes
    spiffe_id: str
    def __init__(self, attributes: _Optional[_Union[JWTSVIDAttributes, _Mapping]] = ..., spiffe_id: _Optional[str] = ...) -> None: ...

class ComposeWorkloadJWTSVIDResponse(_message.Message):
    __slots__ = ("attributes",)
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    attributes: JWTSVIDAttributes
    def __init__(self, attributes: _Optional[_Union[JWTSVIDAttributes, _Mapping]] = ...) -> None: ...

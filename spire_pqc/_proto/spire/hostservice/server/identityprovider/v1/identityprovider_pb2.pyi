from spire_pqc._proto.spire.plugin.types import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class X509Identity(_message.Message):
    __slots__ = ("cert_chain", "private_key")
    CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    cert_chain: _containers.RepeatedScalarFieldContainer[bytes]
    private_key: bytes
    def __init__(self, cert_chain: _Optional[_Iterable[bytes]] = ..., private_key: _Optional[bytes] = ...) -> None: ...

class FetchX509IdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FetchX509IdentityResponse(_message.Message):
    __slots__ = ("identity", "bundle")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    identity: X509Identity
    bundle: _types_pb2.Bundle
    def __init__(self, identity: _Optional[_Union[X509Identity, _Mapping]] = ..., bundle: _Optional[_Union[_types_pb2.Bundle, _Mapping]] = ...) -> None: ...

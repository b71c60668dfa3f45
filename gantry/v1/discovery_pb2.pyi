from gantry.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DiscoveryRequest(_message.Message):
    __slots__ = ("proxy_id", "admin_url")
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_URL_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    admin_url: str
    def __init__(self, proxy_id: _Optional[str] = ..., admin_url: _Optional[str] = ...) -> None: ...

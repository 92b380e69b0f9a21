from gateway.cells.schema import activity_pb2 as _activity_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoomType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GLOBAL: _ClassVar[RoomType]
    WORKSPACE: _ClassVar[RoomType]
    USER: _ClassVar[RoomType]
    NODE: _ClassVar[RoomType]
    ANY: _ClassVar[RoomType]
GLOBAL: RoomType
WORKSPACE: RoomType
USER: RoomType
NODE: RoomType
ANY: RoomType

class ChatRoom(_message.Message):
    __slots__ = ("Uuid", "Type", "RoomTypeObject", "RoomLabel", "Users", "LastUpdated")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROOMTYPEOBJECT_FIELD_NUMBER: _ClassVar[int]
    ROOMLABEL_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    LASTUPDATED_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    Type: RoomType
    RoomTypeObject: str
    RoomLabel: str
    Users: _containers.RepeatedScalarFieldContainer[str]
    LastUpdated: int
    def __init__(self, Uuid: _Optional[str] = ..., Type: _Optional[_Union[RoomType, str]] = ..., RoomTypeObject: _Optional[str] = ..., RoomLabel: _Optional[str] = ..., Users: _Optional[_Iterable[str]] = ..., LastUpdated: _Optional[int] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("Uuid", "RoomUuid", "Message", "Author", "Timestamp", "Activity", "Info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    ROOMUUID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    RoomUuid: str
    Message: str
    Author: str
    Timestamp: int
    Activity: _activity_pb2.Object
    Info: _containers.ScalarMap[str, str]
    def __init__(self, Uuid: _Optional[str] = ..., RoomUuid: _Optional[str] = ..., Message: _Optional[str] = ..., Author: _Optional[str] = ..., Timestamp: _Optional[int] = ..., Activity: _Optional[_Union[_activity_pb2.Object, _Mapping]] = ..., Info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("Message", "Room", "Details")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    Message: ChatMessage
    Room: ChatRoom
    Details: str
    def __init__(self, Message: _Optional[_Union[ChatMessage, _Mapping]] = ..., Room: _Optional[_Union[ChatRoom, _Mapping]] = ..., Details: _Optional[str] = ...) -> None: ...

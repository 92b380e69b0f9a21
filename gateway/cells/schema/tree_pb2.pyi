from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[NodeType]
    LEAF: _ClassVar[NodeType]
    COLLECTION: _ClassVar[NodeType]
UNKNOWN: NodeType
LEAF: NodeType
COLLECTION: NodeType

class Node(_message.Message):
    __slots__ = ("Uuid", "Path", "Type", "Size", "MTime", "Mode", "ModeString", "Etag", "Commits", "MetaStore", "AppearsIn")
    class MetaStoreEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODESTRING_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    METASTORE_FIELD_NUMBER: _ClassVar[int]
    APPEARSIN_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    Path: str
    Type: NodeType
    Size: int
    MTime: int
    Mode: int
    ModeString: str
    Etag: str
    Commits: _containers.RepeatedCompositeFieldContainer[ChangeLog]
    MetaStore: _containers.ScalarMap[str, str]
    AppearsIn: _containers.RepeatedCompositeFieldContainer[WorkspaceRelativePath]
    def __init__(self, Uuid: _Optional[str] = ..., Path: _Optional[str] = ..., Type: _Optional[_Union[NodeType, str]] = ..., Size: _Optional[int] = ..., MTime: _Optional[int] = ..., Mode: _Optional[int] = ..., ModeString: _Optional[str] = ..., Etag: _Optional[str] = ..., Commits: _Optional[_Iterable[_Union[ChangeLog, _Mapping]]] = ..., MetaStore: _Optional[_Mapping[str, str]] = ..., AppearsIn: _Optional[_Iterable[_Union[WorkspaceRelativePath, _Mapping]]] = ...) -> None: ...

class WorkspaceRelativePath(_message.Message):
    __slots__ = ("WsUuid", "WsLabel", "Path", "WsSlug", "WsScope")
    WSUUID_FIELD_NUMBER: _ClassVar[int]
    WSLABEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    WSSLUG_FIELD_NUMBER: _ClassVar[int]
    WSSCOPE_FIELD_NUMBER: _ClassVar[int]
    WsUuid: str
    WsLabel: str
    Path: str
    WsSlug: str
    WsScope: str
    def __init__(self, WsUuid: _Optional[str] = ..., WsLabel: _Optional[str] = ..., Path: _Optional[str] = ..., WsSlug: _Optional[str] = ..., WsScope: _Optional[str] = ...) -> None: ...

class ChangeLog(_message.Message):
    __slots__ = ("Uuid", "Description", "MTime", "Size", "Data", "OwnerUuid", "Event", "Location")
    UUID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OWNERUUID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    Description: str
    MTime: int
    Size: int
    Data: bytes
    OwnerUuid: str
    Event: NodeChangeEvent
    Location: Node
    def __init__(self, Uuid: _Optional[str] = ..., Description: _Optional[str] = ..., MTime: _Optional[int] = ..., Size: _Optional[int] = ..., Data: _Optional[bytes] = ..., OwnerUuid: _Optional[str] = ..., Event: _Optional[_Union[NodeChangeEvent, _Mapping]] = ..., Location: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class NodeChangeEvent(_message.Message):
    __slots__ = ("Type", "Source", "Target", "Metadata", "Silent", "Optimistic")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CREATE: _ClassVar[NodeChangeEvent.EventType]
        READ: _ClassVar[NodeChangeEvent.EventType]
        UPDATE_PATH: _ClassVar[NodeChangeEvent.EventType]
        UPDATE_CONTENT: _ClassVar[NodeChangeEvent.EventType]
        UPDATE_META: _ClassVar[NodeChangeEvent.EventType]
        UPDATE_USER_META: _ClassVar[NodeChangeEvent.EventType]
        DELETE: _ClassVar[NodeChangeEvent.EventType]
    CREATE: NodeChangeEvent.EventType
    READ: NodeChangeEvent.EventType
    UPDATE_PATH: NodeChangeEvent.EventType
    UPDATE_CONTENT: NodeChangeEvent.EventType
    UPDATE_META: NodeChangeEvent.EventType
    UPDATE_USER_META: NodeChangeEvent.EventType
    DELETE: NodeChangeEvent.EventType
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    OPTIMISTIC_FIELD_NUMBER: _ClassVar[int]
    Type: NodeChangeEvent.EventType
    Source: Node
    Target: Node
    Metadata: _containers.ScalarMap[str, str]
    Silent: bool
    Optimistic: bool
    def __init__(self, Type: _Optional[_Union[NodeChangeEvent.EventType, str]] = ..., Source: _Optional[_Union[Node, _Mapping]] = ..., Target: _Optional[_Union[Node, _Mapping]] = ..., Metadata: _Optional[_Mapping[str, str]] = ..., Silent: _Optional[bool] = ..., Optimistic: _Optional[bool] = ...) -> None: ...

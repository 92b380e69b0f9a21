from gateway.cells.schema import service_pb2 as _service_pb2
from gateway.cells.schema import tree_pb2 as _tree_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkspaceScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANY: _ClassVar[WorkspaceScope]
    ADMIN: _ClassVar[WorkspaceScope]
    ROOM: _ClassVar[WorkspaceScope]
    LINK: _ClassVar[WorkspaceScope]

class ChangeEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREATE: _ClassVar[ChangeEventType]
    READ: _ClassVar[ChangeEventType]
    UPDATE: _ClassVar[ChangeEventType]
    DELETE: _ClassVar[ChangeEventType]
    LOGIN: _ClassVar[ChangeEventType]
    LOGOUT: _ClassVar[ChangeEventType]
ANY: WorkspaceScope
ADMIN: WorkspaceScope
ROOM: WorkspaceScope
LINK: WorkspaceScope
CREATE: ChangeEventType
READ: ChangeEventType
UPDATE: ChangeEventType
DELETE: ChangeEventType
LOGIN: ChangeEventType
LOGOUT: ChangeEventType

class User(_message.Message):
    __slots__ = ("Uuid", "GroupPath", "Attributes", "Roles", "Login", "Password", "OldPassword", "IsGroup", "GroupLabel", "LastConnected", "Policies", "PoliciesContextEditable")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    GROUPPATH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    OLDPASSWORD_FIELD_NUMBER: _ClassVar[int]
    ISGROUP_FIELD_NUMBER: _ClassVar[int]
    GROUPLABEL_FIELD_NUMBER: _ClassVar[int]
    LASTCONNECTED_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    POLICIESCONTEXTEDITABLE_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    GroupPath: str
    Attributes: _containers.ScalarMap[str, str]
    Roles: _containers.RepeatedCompositeFieldContainer[Role]
    Login: str
    Password: str
    OldPassword: str
    IsGroup: bool
    GroupLabel: str
    LastConnected: int
    Policies: _containers.RepeatedCompositeFieldContainer[_service_pb2.ResourcePolicy]
    PoliciesContextEditable: bool
    def __init__(self, Uuid: _Optional[str] = ..., GroupPath: _Optional[str] = ..., Attributes: _Optional[_Mapping[str, str]] = ..., Roles: _Optional[_Iterable[_Union[Role, _Mapping]]] = ..., Login: _Optional[str] = ..., Password: _Optional[str] = ..., OldPassword: _Optional[str] = ..., IsGroup: _Optional[bool] = ..., GroupLabel: _Optional[str] = ..., LastConnected: _Optional[int] = ..., Policies: _Optional[_Iterable[_Union[_service_pb2.ResourcePolicy, _Mapping]]] = ..., PoliciesContextEditable: _Optional[bool] = ...) -> None: ...

class Role(_message.Message):
    __slots__ = ("Uuid", "Label", "IsTeam", "GroupRole", "UserRole", "LastUpdated", "AutoApplies", "Policies", "PoliciesContextEditable", "ForceOverride")
    UUID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ISTEAM_FIELD_NUMBER: _ClassVar[int]
    GROUPROLE_FIELD_NUMBER: _ClassVar[int]
    USERROLE_FIELD_NUMBER: _ClassVar[int]
    LASTUPDATED_FIELD_NUMBER: _ClassVar[int]
    AUTOAPPLIES_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    POLICIESCONTEXTEDITABLE_FIELD_NUMBER: _ClassVar[int]
    FORCEOVERRIDE_FIELD_NUMBER: _ClassVar[int]
    Uuid: str
    Label: str
    IsTeam: bool
    GroupRole: bool
    UserRole: bool
    LastUpdated: int
    AutoApplies: _containers.RepeatedScalarFieldContainer[str]
    Policies: _containers.RepeatedCompositeFieldContainer[_service_pb2.ResourcePolicy]
    PoliciesContextEditable: bool
    ForceOverride: bool
    def __init__(self, Uuid: _Optional[str] = ..., Label: _Optional[str] = ..., IsTeam: _Optional[bool] = ..., GroupRole: _Optional[bool] = ..., UserRole: _Optional[bool] = ..., LastUpdated: _Optional[int] = ..., AutoApplies: _Optional[_Iterable[str]] = ..., Policies: _Optional[_Iterable[_Union[_service_pb2.ResourcePolicy, _Mapping]]] = ..., PoliciesContextEditable: _Optional[bool] = ..., ForceOverride: _Optional[bool] = ...) -> None: ...

class Workspace(_message.Message):
    __slots__ = ("UUID", "Label", "Description", "Slug", "Scope", "LastUpdated", "Policies", "Attributes", "RootUUIDs", "RootNodes", "PoliciesContextEditable")
    class RootNodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tree_pb2.Node
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tree_pb2.Node, _Mapping]] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LASTUPDATED_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ROOTUUIDS_FIELD_NUMBER: _ClassVar[int]
    ROOTNODES_FIELD_NUMBER: _ClassVar[int]
    POLICIESCONTEXTEDITABLE_FIELD_NUMBER: _ClassVar[int]
    UUID: str
    Label: str
    Description: str
    Slug: str
    Scope: WorkspaceScope
    LastUpdated: int
    Policies: _containers.RepeatedCompositeFieldContainer[_service_pb2.ResourcePolicy]
    Attributes: str
    RootUUIDs: _containers.RepeatedScalarFieldContainer[str]
    RootNodes: _containers.MessageMap[str, _tree_pb2.Node]
    PoliciesContextEditable: bool
    def __init__(self, UUID: _Optional[str] = ..., Label: _Optional[str] = ..., Description: _Optional[str] = ..., Slug: _Optional[str] = ..., Scope: _Optional[_Union[WorkspaceScope, str]] = ..., LastUpdated: _Optional[int] = ..., Policies: _Optional[_Iterable[_Union[_service_pb2.ResourcePolicy, _Mapping]]] = ..., Attributes: _Optional[str] = ..., RootUUIDs: _Optional[_Iterable[str]] = ..., RootNodes: _Optional[_Mapping[str, _tree_pb2.Node]] = ..., PoliciesContextEditable: _Optional[bool] = ...) -> None: ...

class ACLAction(_message.Message):
    __slots__ = ("Name", "Value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    Name: str
    Value: str
    def __init__(self, Name: _Optional[str] = ..., Value: _Optional[str] = ...) -> None: ...

class ACL(_message.Message):
    __slots__ = ("ID", "Action", "RoleID", "WorkspaceID", "NodeID")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROLEID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACEID_FIELD_NUMBER: _ClassVar[int]
    NODEID_FIELD_NUMBER: _ClassVar[int]
    ID: str
    Action: ACLAction
    RoleID: str
    WorkspaceID: str
    NodeID: str
    def __init__(self, ID: _Optional[str] = ..., Action: _Optional[_Union[ACLAction, _Mapping]] = ..., RoleID: _Optional[str] = ..., WorkspaceID: _Optional[str] = ..., NodeID: _Optional[str] = ...) -> None: ...

class UserMetaNamespace(_message.Message):
    __slots__ = ("Namespace", "Label", "Order", "Indexable", "JsonDefinition", "Policies", "PoliciesContextEditable")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    INDEXABLE_FIELD_NUMBER: _ClassVar[int]
    JSONDEFINITION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    POLICIESCONTEXTEDITABLE_FIELD_NUMBER: _ClassVar[int]
    Namespace: str
    Label: str
    Order: int
    Indexable: bool
    JsonDefinition: str
    Policies: _containers.RepeatedCompositeFieldContainer[_service_pb2.ResourcePolicy]
    PoliciesContextEditable: bool
    def __init__(self, Namespace: _Optional[str] = ..., Label: _Optional[str] = ..., Order: _Optional[int] = ..., Indexable: _Optional[bool] = ..., JsonDefinition: _Optional[str] = ..., Policies: _Optional[_Iterable[_Union[_service_pb2.ResourcePolicy, _Mapping]]] = ..., PoliciesContextEditable: _Optional[bool] = ...) -> None: ...

class ChangeEvent(_message.Message):
    __slots__ = ("jsonType", "Type", "User", "Role", "Workspace", "Acl", "MetaNamespace", "Attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JSONTYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    ACL_FIELD_NUMBER: _ClassVar[int]
    METANAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    jsonType: str
    Type: ChangeEventType
    User: User
    Role: Role
    Workspace: Workspace
    Acl: ACL
    MetaNamespace: UserMetaNamespace
    Attributes: _containers.ScalarMap[str, str]
    def __init__(self, jsonType: _Optional[str] = ..., Type: _Optional[_Union[ChangeEventType, str]] = ..., User: _Optional[_Union[User, _Mapping]] = ..., Role: _Optional[_Union[Role, _Mapping]] = ..., Workspace: _Optional[_Union[Workspace, _Mapping]] = ..., Acl: _Optional[_Union[ACL, _Mapping]] = ..., MetaNamespace: _Optional[_Union[UserMetaNamespace, _Mapping]] = ..., Attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

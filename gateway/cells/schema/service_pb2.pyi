from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourcePolicyAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANY: _ClassVar[ResourcePolicyAction]
    OWNER: _ClassVar[ResourcePolicyAction]
    READ: _ClassVar[ResourcePolicyAction]
    WRITE: _ClassVar[ResourcePolicyAction]
    EDIT_RULES: _ClassVar[ResourcePolicyAction]

class PolicyEffect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    deny: _ClassVar[PolicyEffect]
    allow: _ClassVar[PolicyEffect]
ANY: ResourcePolicyAction
OWNER: ResourcePolicyAction
READ: ResourcePolicyAction
WRITE: ResourcePolicyAction
EDIT_RULES: ResourcePolicyAction
deny: PolicyEffect
allow: PolicyEffect

class ResourcePolicy(_message.Message):
    __slots__ = ("id", "Resource", "Action", "Subject", "Effect", "JsonConditions")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    JSONCONDITIONS_FIELD_NUMBER: _ClassVar[int]
    id: int
    Resource: str
    Action: ResourcePolicyAction
    Subject: str
    Effect: PolicyEffect
    JsonConditions: str
    def __init__(self, id: _Optional[int] = ..., Resource: _Optional[str] = ..., Action: _Optional[_Union[ResourcePolicyAction, str]] = ..., Subject: _Optional[str] = ..., Effect: _Optional[_Union[PolicyEffect, str]] = ..., JsonConditions: _Optional[str] = ...) -> None: ...

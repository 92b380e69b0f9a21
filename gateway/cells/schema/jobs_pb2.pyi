from gateway.cells.schema import activity_pb2 as _activity_pb2
from gateway.cells.schema import idm_pb2 as _idm_pb2
from gateway.cells.schema import tree_pb2 as _tree_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Unknown: _ClassVar[TaskStatus]
    Idle: _ClassVar[TaskStatus]
    Running: _ClassVar[TaskStatus]
    Finished: _ClassVar[TaskStatus]
    Interrupted: _ClassVar[TaskStatus]
    Paused: _ClassVar[TaskStatus]
    Any: _ClassVar[TaskStatus]
    Error: _ClassVar[TaskStatus]
    Queued: _ClassVar[TaskStatus]
Unknown: TaskStatus
Idle: TaskStatus
Running: TaskStatus
Finished: TaskStatus
Interrupted: TaskStatus
Paused: TaskStatus
Any: TaskStatus
Error: TaskStatus
Queued: TaskStatus

class Schedule(_message.Message):
    __slots__ = ("Iso8601Schedule", "Iso8601MinDelta")
    ISO8601SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    ISO8601MINDELTA_FIELD_NUMBER: _ClassVar[int]
    Iso8601Schedule: str
    Iso8601MinDelta: str
    def __init__(self, Iso8601Schedule: _Optional[str] = ..., Iso8601MinDelta: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("ID", "Label", "Description", "Bypass", "BreakAfter", "Timeout", "Parameters", "ChainedActions", "FailedFilterActions", "MergeAction")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BYPASS_FIELD_NUMBER: _ClassVar[int]
    BREAKAFTER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CHAINEDACTIONS_FIELD_NUMBER: _ClassVar[int]
    FAILEDFILTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    MERGEACTION_FIELD_NUMBER: _ClassVar[int]
    ID: str
    Label: str
    Description: str
    Bypass: bool
    BreakAfter: bool
    Timeout: str
    Parameters: _containers.ScalarMap[str, str]
    ChainedActions: _containers.RepeatedCompositeFieldContainer[Action]
    FailedFilterActions: _containers.RepeatedCompositeFieldContainer[Action]
    MergeAction: Action
    def __init__(self, ID: _Optional[str] = ..., Label: _Optional[str] = ..., Description: _Optional[str] = ..., Bypass: _Optional[bool] = ..., BreakAfter: _Optional[bool] = ..., Timeout: _Optional[str] = ..., Parameters: _Optional[_Mapping[str, str]] = ..., ChainedActions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., FailedFilterActions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., MergeAction: _Optional[_Union[Action, _Mapping]] = ...) -> None: ...

class ActionOutput(_message.Message):
    __slots__ = ("Success", "RawBody", "StringBody", "JsonBody", "ErrorString", "Ignored", "Time", "Vars")
    class VarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RAWBODY_FIELD_NUMBER: _ClassVar[int]
    STRINGBODY_FIELD_NUMBER: _ClassVar[int]
    JSONBODY_FIELD_NUMBER: _ClassVar[int]
    ERRORSTRING_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    Success: bool
    RawBody: bytes
    StringBody: str
    JsonBody: bytes
    ErrorString: str
    Ignored: bool
    Time: int
    Vars: _containers.ScalarMap[str, str]
    def __init__(self, Success: _Optional[bool] = ..., RawBody: _Optional[bytes] = ..., StringBody: _Optional[str] = ..., JsonBody: _Optional[bytes] = ..., ErrorString: _Optional[str] = ..., Ignored: _Optional[bool] = ..., Time: _Optional[int] = ..., Vars: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ActionMessage(_message.Message):
    __slots__ = ("Nodes", "Users", "Roles", "Workspaces", "Acls", "Activities", "OutputChain")
    NODES_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    ACLS_FIELD_NUMBER: _ClassVar[int]
    ACTIVITIES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTCHAIN_FIELD_NUMBER: _ClassVar[int]
    Nodes: _containers.RepeatedCompositeFieldContainer[_tree_pb2.Node]
    Users: _containers.RepeatedCompositeFieldContainer[_idm_pb2.User]
    Roles: _containers.RepeatedCompositeFieldContainer[_idm_pb2.Role]
    Workspaces: _containers.RepeatedCompositeFieldContainer[_idm_pb2.Workspace]
    Acls: _containers.RepeatedCompositeFieldContainer[_idm_pb2.ACL]
    Activities: _containers.RepeatedCompositeFieldContainer[_activity_pb2.Object]
    OutputChain: _containers.RepeatedCompositeFieldContainer[ActionOutput]
    def __init__(self, Nodes: _Optional[_Iterable[_Union[_tree_pb2.Node, _Mapping]]] = ..., Users: _Optional[_Iterable[_Union[_idm_pb2.User, _Mapping]]] = ..., Roles: _Optional[_Iterable[_Union[_idm_pb2.Role, _Mapping]]] = ..., Workspaces: _Optional[_Iterable[_Union[_idm_pb2.Workspace, _Mapping]]] = ..., Acls: _Optional[_Iterable[_Union[_idm_pb2.ACL, _Mapping]]] = ..., Activities: _Optional[_Iterable[_Union[_activity_pb2.Object, _Mapping]]] = ..., OutputChain: _Optional[_Iterable[_Union[ActionOutput, _Mapping]]] = ...) -> None: ...

class ActionLog(_message.Message):
    __slots__ = ("Action", "InputMessage", "OutputMessage")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INPUTMESSAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTMESSAGE_FIELD_NUMBER: _ClassVar[int]
    Action: Action
    InputMessage: ActionMessage
    OutputMessage: ActionMessage
    def __init__(self, Action: _Optional[_Union[Action, _Mapping]] = ..., InputMessage: _Optional[_Union[ActionMessage, _Mapping]] = ..., OutputMessage: _Optional[_Union[ActionMessage, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("ID", "JobID", "Status", "StatusMessage", "TriggerOwner", "StartTime", "EndTime", "CanStop", "CanPause", "HasProgress", "Progress", "ActionsLogs")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOBID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUSMESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRIGGEROWNER_FIELD_NUMBER: _ClassVar[int]
    STARTTIME_FIELD_NUMBER: _ClassVar[int]
    ENDTIME_FIELD_NUMBER: _ClassVar[int]
    CANSTOP_FIELD_NUMBER: _ClassVar[int]
    CANPAUSE_FIELD_NUMBER: _ClassVar[int]
    HASPROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ACTIONSLOGS_FIELD_NUMBER: _ClassVar[int]
    ID: str
    JobID: str
    Status: TaskStatus
    StatusMessage: str
    TriggerOwner: str
    StartTime: int
    EndTime: int
    CanStop: bool
    CanPause: bool
    HasProgress: bool
    Progress: float
    ActionsLogs: _containers.RepeatedCompositeFieldContainer[ActionLog]
    def __init__(self, ID: _Optional[str] = ..., JobID: _Optional[str] = ..., Status: _Optional[_Union[TaskStatus, str]] = ..., StatusMessage: _Optional[str] = ..., TriggerOwner: _Optional[str] = ..., StartTime: _Optional[int] = ..., EndTime: _Optional[int] = ..., CanStop: _Optional[bool] = ..., CanPause: _Optional[bool] = ..., HasProgress: _Optional[bool] = ..., Progress: _Optional[float] = ..., ActionsLogs: _Optional[_Iterable[_Union[ActionLog, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("ID", "Label", "Owner", "Metadata", "CreatedAt", "ModifiedAt", "Inactive", "Custom", "Languages", "EventNames", "Schedule", "AutoStart", "AutoRestart", "AutoClean", "Actions", "MergeAction", "MaxConcurrency", "TasksSilentUpdate", "Tasks", "Timeout", "VersionMeta")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class VersionMetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    MODIFIEDAT_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    EVENTNAMES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    AUTOSTART_FIELD_NUMBER: _ClassVar[int]
    AUTORESTART_FIELD_NUMBER: _ClassVar[int]
    AUTOCLEAN_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    MERGEACTION_FIELD_NUMBER: _ClassVar[int]
    MAXCONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    TASKSSILENTUPDATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    VERSIONMETA_FIELD_NUMBER: _ClassVar[int]
    ID: str
    Label: str
    Owner: str
    Metadata: _containers.ScalarMap[str, str]
    CreatedAt: int
    ModifiedAt: int
    Inactive: bool
    Custom: bool
    Languages: _containers.RepeatedScalarFieldContainer[str]
    EventNames: _containers.RepeatedScalarFieldContainer[str]
    Schedule: Schedule
    AutoStart: bool
    AutoRestart: bool
    AutoClean: bool
    Actions: _containers.RepeatedCompositeFieldContainer[Action]
    MergeAction: Action
    MaxConcurrency: int
    TasksSilentUpdate: bool
    Tasks: _containers.RepeatedCompositeFieldContainer[Task]
    Timeout: str
    VersionMeta: _containers.ScalarMap[str, str]
    def __init__(self, ID: _Optional[str] = ..., Label: _Optional[str] = ..., Owner: _Optional[str] = ..., Metadata: _Optional[_Mapping[str, str]] = ..., CreatedAt: _Optional[int] = ..., ModifiedAt: _Optional[int] = ..., Inactive: _Optional[bool] = ..., Custom: _Optional[bool] = ..., Languages: _Optional[_Iterable[str]] = ..., EventNames: _Optional[_Iterable[str]] = ..., Schedule: _Optional[_Union[Schedule, _Mapping]] = ..., AutoStart: _Optional[bool] = ..., AutoRestart: _Optional[bool] = ..., AutoClean: _Optional[bool] = ..., Actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., MergeAction: _Optional[_Union[Action, _Mapping]] = ..., MaxConcurrency: _Optional[int] = ..., TasksSilentUpdate: _Optional[bool] = ..., Tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., Timeout: _Optional[str] = ..., VersionMeta: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TaskChangeEvent(_message.Message):
    __slots__ = ("TaskUpdated", "Job", "NanoStamp", "StatusMeta")
    class StatusMetaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASKUPDATED_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    NANOSTAMP_FIELD_NUMBER: _ClassVar[int]
    STATUSMETA_FIELD_NUMBER: _ClassVar[int]
    TaskUpdated: Task
    Job: Job
    NanoStamp: int
    StatusMeta: _containers.ScalarMap[str, str]
    def __init__(self, TaskUpdated: _Optional[_Union[Task, _Mapping]] = ..., Job: _Optional[_Union[Job, _Mapping]] = ..., NanoStamp: _Optional[int] = ..., StatusMeta: _Optional[_Mapping[str, str]] = ...) -> None: ...

"""Task, IDM and activity events through the pure router: who receives them and in what shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.identity import Identity, Workspace
from gateway.topics import ACTIVITY_TOPIC, IDM_TOPIC, TASKS_TOPIC
from tests.routing import messages_for

Json = dict[str, Any]
COMMON = Workspace("ws-common", "common-files", ("ds/common",), "rw")
OTHER = Workspace("ws-other", "other", ("ds/other",))

ALICE = Identity(user="alice", sub="u-alice", roles=("r-alice", "r-team"), workspaces=(COMMON,))
BOB = Identity(user="bob", sub="u-bob", roles=("r-bob",), workspaces=(OTHER,))
ADMIN = Identity(user="root", sub="u-root", profile="admin", roles=("r-root",))
SHARED = Identity(user="carol", sub="u-carol", profile="shared")
EVERYONE = {"alice": ALICE, "bob": BOB, "root": ADMIN, "carol": SHARED}


def receivers(topic: str, event: Json) -> dict[str, list[Json]]:
    """Who receives what (only the names that receive something); checks the event is not modified."""
    before = copy.deepcopy(event)
    got = {name: messages_for(topic, event, who) for name, who in EVERYONE.items()}
    assert event == before, "routing must not modify the event"
    return {name: messages for name, messages in got.items() if messages}


# ---------------------------------------------------------------------------------------------
# Tasks

TASK = {"ID": "t-1", "JobID": "copy-move", "Status": "Running", "TriggerOwner": "alice", "Progress": 0.4}
JOB = {"ID": "copy-move", "Label": "Copy files", "Owner": "alice"}


def test_tasks_to_trigger_owner() -> None:
    event = {"TaskUpdated": TASK, "Job": JOB}
    assert receivers(TASKS_TOPIC, event) == {"alice": [{"TaskUpdated": TASK, "Job": JOB}]}


def test_tasks_forwarded_whole() -> None:
    """NanoStamp orders a job's updates in the browser; StatusMeta is part of what Cells sends."""
    event = {"TaskUpdated": TASK, "Job": JOB, "NanoStamp": "1717240104123456789", "StatusMeta": {"k": "v"}}
    assert receivers(TASKS_TOPIC, event) == {"alice": [event]}


def test_tasks_without_job() -> None:
    assert receivers(TASKS_TOPIC, {"TaskUpdated": TASK}) == {"alice": [{"TaskUpdated": TASK}]}


def test_tasks_system_user_to_admins() -> None:
    task = {**TASK, "TriggerOwner": "pydio.system.user"}
    assert receivers(TASKS_TOPIC, {"TaskUpdated": task, "Job": JOB}) == {
        "root": [{"TaskUpdated": task, "Job": JOB}]
    }


def test_tasks_admin_does_not_get_other_users_tasks() -> None:
    assert "root" not in receivers(TASKS_TOPIC, {"TaskUpdated": TASK})


def test_tasks_unknown_owner_reaches_nobody() -> None:
    assert receivers(TASKS_TOPIC, {"TaskUpdated": {**TASK, "TriggerOwner": "zoe"}}) == {}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({}, id="empty"),
        pytest.param({"Job": JOB}, id="no_task"),
        pytest.param({"TaskUpdated": "alice"}, id="task_not_an_object"),
        pytest.param({"TaskUpdated": {k: v for k, v in TASK.items() if k != "TriggerOwner"}}, id="no_owner"),
        pytest.param({"TaskUpdated": {**TASK, "TriggerOwner": ""}}, id="empty_owner"),
        pytest.param({"TaskUpdated": {**TASK, "TriggerOwner": ["alice"]}}, id="owner_not_a_string"),
    ],
)
def test_tasks_malformed_reach_nobody(event: Json) -> None:
    assert receivers(TASKS_TOPIC, event) == {}


# ---------------------------------------------------------------------------------------------
# IDM: one key, the first that applies


def acl(role: str = "r-team", action: str = "read") -> Json:
    return {"ID": "acl-9", "Action": {"Name": action, "Value": "1"}, "RoleID": role, "NodeID": "n-1"}


IDM_CASES = [
    pytest.param({"Type": "CREATE", "Acl": acl("r-team")}, {"alice"}, id="acl_role"),
    pytest.param({"Acl": acl("r-bob")}, {"bob"}, id="acl_other_role"),
    pytest.param({"Acl": acl("r-nobody")}, set(), id="acl_role_nobody_holds"),
    pytest.param({"Acl": {"RoleID": "r-team"}}, {"alice"}, id="acl_without_action"),
    pytest.param({"Acl": acl("r-team", "parameter:core.conf:lang")}, set(), id="acl_parameter_skipped"),
    pytest.param({"Acl": acl("r-team", "action:core.x:upload")}, set(), id="acl_action_skipped"),
    pytest.param(
        {"Acl": acl("r-team", "parameter:x"), "User": {"Login": "bob"}},
        {"bob"},
        id="skipped_acl_falls_through_to_user",
    ),
    pytest.param(
        {"Acl": acl("r-team", "action:x"), "Workspace": {"UUID": "ws-other"}},
        {"bob"},
        id="skipped_acl_falls_through_to_workspace",
    ),
    pytest.param(
        {"Acl": {"ID": "acl-1", "Action": {"Name": "read"}}, "Role": {"Uuid": "r-bob"}},
        {"bob"},
        id="acl_without_role_falls_through",
    ),
    pytest.param({"Acl": "r-team", "Role": {"Uuid": "r-bob"}}, {"bob"}, id="acl_not_an_object"),
    pytest.param(
        {"Acl": acl("r-team"), "Role": {"Uuid": "r-bob"}, "User": {"Login": "bob"}},
        {"alice"},
        id="acl_takes_precedence",
    ),
    pytest.param({"Role": {"Uuid": "r-alice", "Label": "Alice"}}, {"alice"}, id="role"),
    pytest.param({"Role": {"Uuid": "r-none"}}, set(), id="role_nobody_holds"),
    pytest.param(
        {"Role": {"Uuid": "r-alice"}, "User": {"Login": "bob"}},
        {"alice"},
        id="role_takes_precedence_over_user",
    ),
    pytest.param(
        {"Role": {"Label": "no uuid"}, "User": {"Login": "bob"}},
        {"bob"},
        id="role_without_uuid_falls_through",
    ),
    pytest.param(
        {"Type": "UPDATE", "User": {"Uuid": "u-1", "Login": "alice", "GroupPath": "/"}},
        {"alice"},
        id="user_login",
    ),
    pytest.param({"User": {"Login": "bob", "Uuid": "u-alice"}}, {"bob"}, id="login_takes_precedence"),
    pytest.param({"User": {"Uuid": "u-alice"}}, {"alice"}, id="user_uuid_is_sub"),
    pytest.param({"User": {"Uuid": "alice"}}, set(), id="user_uuid_is_not_login"),
    pytest.param({"User": {"Login": "", "Uuid": "u-bob"}}, {"bob"}, id="empty_login_falls_through"),
    pytest.param(
        {"User": {"Login": "zoe"}, "Workspace": {"UUID": "ws-common"}},
        set(),
        id="user_takes_precedence_over_workspace",
    ),
    pytest.param({"Workspace": {"UUID": "ws-common", "Slug": "common-files"}}, {"alice"}, id="workspace"),
    pytest.param({"Workspace": {"UUID": "ws-nowhere"}}, set(), id="workspace_nobody_has"),
    pytest.param({"Workspace": {"Slug": "common-files"}}, set(), id="workspace_without_uuid"),
    pytest.param({"Type": "UPDATE"}, set(), id="nothing_applies"),
    pytest.param({"User": "alice", "Role": ["r-alice"]}, set(), id="objects_not_objects"),
]


@pytest.mark.parametrize(("event", "names"), IDM_CASES)
def test_idm_rules(event: Json, names: set[str]) -> None:
    expected = {**event, "@type": "idm"}
    if isinstance(event.get("User"), dict):
        expected["User"] = {**event["User"], "PoliciesContextEditable": True}
    assert receivers(IDM_TOPIC, event) == {name: [expected] for name in names}


def test_idm_user_in_the_v5_public_form() -> None:
    """Cells v5 (``User.WithPublicData``): no pydio:* attributes, no password fields."""
    user = {"Login": "alice", "Password": "h", "OldPassword": "o",
            "Attributes": {"pydio:labelLike": "x", "displayName": "Alice"}}  # fmt: skip
    [message] = messages_for(IDM_TOPIC, {"User": user}, ALICE)
    assert message["User"] == {"Login": "alice", "Attributes": {"displayName": "Alice"},
                               "PoliciesContextEditable": True}  # fmt: skip
    [message] = messages_for(IDM_TOPIC, {"User": {"Login": "alice", "Attributes": {"pydio:x": "1"}}}, ALICE)
    assert message["User"] == {"Login": "alice", "PoliciesContextEditable": True}


def test_idm_message_is_event_with_type_tag() -> None:
    event = {"Type": "UPDATE", "Workspace": {"UUID": "ws-common", "Slug": "common-files", "Label": "C"}}
    [message] = messages_for(IDM_TOPIC, event, ALICE)
    assert message == {
        "@type": "idm",
        "Type": "UPDATE",
        "Workspace": {"UUID": "ws-common", "Slug": "common-files", "Label": "C"},
    }


def test_idm_type_tag_overrides_event_tag() -> None:
    [message] = messages_for(IDM_TOPIC, {"@type": "other", "User": {"Login": "alice"}}, ALICE)
    assert message["@type"] == "idm"


# ---------------------------------------------------------------------------------------------
# Activity


def activity(
    owner: str = "alice", actor: str = "bob", box: str = "inbox", owner_type: str = "USER", **parts: Any
) -> Json:
    return {
        "OwnerType": owner_type,
        "OwnerId": owner,
        "BoxName": box,
        "Activity": {
            "type": "Update",
            "actor": {"type": "Person", "id": actor, "name": actor.title()},
            **parts,
        },
    }


def test_activity_to_owner() -> None:
    event = activity()
    assert receivers(ACTIVITY_TOPIC, event) == {"alice": [{**event, "@type": "activity"}]}


@pytest.mark.parametrize(
    ("box", "owner_type", "delivered"),
    [
        ("inbox", "USER", True),
        ("inbox", "NODE", True),
        ("outbox", "USER", True),
        ("", "USER", True),
        ("outbox", "NODE", False),
        ("subscriptions", "ROLE", False),
        ("", "", False),
    ],
)
def test_activity_box_and_owner_type(box: str, owner_type: str, delivered: bool) -> None:
    event = activity(box=box, owner_type=owner_type)
    assert bool(receivers(ACTIVITY_TOPIC, event)) is delivered


def test_activity_missing_box_and_owner_type() -> None:
    event = activity()
    del event["BoxName"], event["OwnerType"]
    assert receivers(ACTIVITY_TOPIC, event) == {}


def test_activity_not_to_the_actor() -> None:
    assert receivers(ACTIVITY_TOPIC, activity(owner="alice", actor="alice")) == {}


def test_activity_actor_without_id_still_delivered() -> None:
    event = activity()
    event["Activity"]["actor"] = {"type": "Person"}
    assert set(receivers(ACTIVITY_TOPIC, event)) == {"alice"}


def test_activity_names_cut_to_basename() -> None:
    event = activity(
        object={"type": "Document", "id": "n-42", "name": "/ds/common/report.txt"},
        origin={"type": "Folder", "id": "n-1", "name": "/ds/secret/folder/"},
        target={"type": "Folder", "id": "n-2", "name": "plain"},
        summary="/ds/untouched/path",
    )
    [message] = receivers(ACTIVITY_TOPIC, event)["alice"]
    assert message["@type"] == "activity"
    assert message["Activity"]["object"] == {"type": "Document", "id": "n-42", "name": "report.txt"}
    assert message["Activity"]["origin"] == {"type": "Folder", "id": "n-1", "name": "folder"}
    assert message["Activity"]["target"] == {"type": "Folder", "id": "n-2", "name": "plain"}
    assert message["Activity"]["summary"] == "/ds/untouched/path"
    assert message["Activity"]["actor"] == event["Activity"]["actor"]
    assert {k: v for k, v in message.items() if k not in ("Activity", "@type")} == {
        k: v for k, v in event.items() if k != "Activity"
    }


def test_activity_name_not_a_string_left_alone() -> None:
    event = activity(object={"type": "Document", "name": 42}, origin="not an object")
    [message] = receivers(ACTIVITY_TOPIC, event)["alice"]
    assert message["Activity"]["object"] == {"type": "Document", "name": 42}
    assert message["Activity"]["origin"] == "not an object"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"OwnerId": ""}, id="empty_owner"),
        pytest.param({"OwnerId": None}, id="null_owner"),
        pytest.param({"OwnerId": "zoe"}, id="owner_not_connected"),
        pytest.param({"Activity": "x"}, id="activity_not_an_object"),
    ],
)
def test_activity_malformed_reach_nobody(change: Json) -> None:
    assert receivers(ACTIVITY_TOPIC, {**activity(), **change}) == {}

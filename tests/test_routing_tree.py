"""Tree and meta events through the pure router: visibility, path rewrite, moves, user-meta policies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.events import route
from gateway.identity import Identity, Workspace
from gateway.topics import META_TOPIC, TREE_TOPIC
from tests.routing import covering_from, messages_for, reaches

COMMON = Workspace("ws-common", "common-files", ("ds/common",), "rw")
WS_A = Workspace("ws-a", "a", ("ds/a",))
WS_AB = Workspace("ws-ab", "ab", ("ds/ab",))
ALL = Workspace("ws-all", "all", ("ds",))
MULTI = Workspace("ws-multi", "multi", ("ds/x", "ds/y"))
NESTED = Workspace("ws-nested", "nested", ("ds", "ds/common"))
SYS = Workspace("ws-sys", "sys", ("ds/.sys",))
WHOLE = Workspace("ws-whole", "whole", ("",))

TOPICS = pytest.mark.parametrize("topic", [TREE_TOPIC, META_TOPIC])
Json = dict[str, Any]


def identity(
    *workspaces: Workspace, user: str = "alice", profile: str = "standard", roles: tuple[str, ...] = ()
) -> Identity:
    return Identity(user=user, sub=f"sub-{user}", profile=profile, roles=roles, workspaces=workspaces)


def node(path: str | None, uuid: str = "n-1", **fields: Any) -> Json:
    out: Json = {"Uuid": uuid, "Type": "LEAF", **fields}
    if path is not None:
        out["Path"] = path
    return out


def seen(path: str, ws: Workspace, uuid: str = "n-1", meta: Json | None = None, **fields: Any) -> Json:
    """A node as workspace ``ws`` shows it."""
    return {
        "Uuid": uuid,
        "Type": "LEAF",
        **fields,
        "Path": path,
        "MetaStore": {**(meta or {}), "EventWorkspaceId": json.dumps(ws.uuid)},
    }


def canonical(messages: list[Json]) -> list[str]:
    return sorted(json.dumps(m, sort_keys=True) for m in messages)


def check(topic: str, event: Json, who: Identity, expected: list[Json]) -> None:
    before = copy.deepcopy(event)
    got = messages_for(topic, event, who)
    assert canonical(got) == canonical(expected)
    assert event == before, "routing must not modify the event"


TREE_CASES = [
    # -- CREATE is the zero value: no Type, Target only --------------------------------------
    pytest.param(
        {"Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="create_missing_type",
    ),
    pytest.param(
        {"Type": "CREATE", "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="create_explicit_type_omitted",
    ),
    pytest.param({"Target": node("/ds/other/a.txt")}, [COMMON], [], id="create_outside"),
    pytest.param({"Target": node("/ds/common/a.txt")}, [], [], id="create_no_workspaces"),
    pytest.param(
        {"Type": "UPDATE_CONTENT", "Target": node("/ds/common/a.txt", Size="12", Etag="e1")},
        [COMMON],
        [{"Type": "UPDATE_CONTENT", "Target": seen("common-files/a.txt", COMMON, Size="12", Etag="e1")}],
        id="update_content",
    ),
    pytest.param(
        {"Type": "UPDATE_META", "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Type": "UPDATE_META", "Target": seen("common-files/a.txt", COMMON)}],
        id="update_meta",
    ),
    pytest.param(
        {"Type": "UPDATE_CONTENT", "Source": node("/ds/common/a.txt"), "Target": node("/ds/common/a.txt")},
        [COMMON],
        [
            {
                "Type": "UPDATE_CONTENT",
                "Source": seen("common-files/a.txt", COMMON),
                "Target": seen("common-files/a.txt", COMMON),
            }
        ],
        id="update_content_with_source",
    ),
    pytest.param(
        {"Type": "DELETE", "Source": node("/ds/common/a.txt")},
        [COMMON],
        [{"Type": "DELETE", "Source": seen("common-files/a.txt", COMMON)}],
        id="delete",
    ),
    pytest.param({"Type": "DELETE", "Source": node("/ds/other/a.txt")}, [COMMON], [], id="delete_outside"),
    pytest.param(
        {"Type": "DELETE", "Target": node("/ds/common/a.txt")}, [COMMON], [], id="delete_without_source"
    ),
    pytest.param({"Type": "READ", "Target": node("/ds/common/a.txt")}, [COMMON], [], id="read_never_sent"),
    pytest.param({"Type": "RENAME", "Target": node("/ds/common/a.txt")}, [COMMON], [], id="unknown_type"),
    pytest.param({"Type": 3, "Target": node("/ds/common/a.txt")}, [COMMON], [], id="type_not_a_string"),
    # -- UPDATE_PATH -------------------------------------------------------------------------
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/common/a.txt"), "Target": node("/ds/common/2026/a.txt")},
        [COMMON],
        [
            {
                "Type": "UPDATE_PATH",
                "Source": seen("common-files/a.txt", COMMON),
                "Target": seen("common-files/2026/a.txt", COMMON),
            }
        ],
        id="move_within",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/other/a.txt"), "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="move_in_is_create",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/common/a.txt"), "Target": node("/ds/other/a.txt")},
        [COMMON],
        [{"Type": "DELETE", "Source": seen("common-files/a.txt", COMMON)}],
        id="move_out_is_delete",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/other/a.txt"), "Target": node("/ds/other/b.txt")},
        [COMMON],
        [],
        id="move_elsewhere",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/common/.a.txt"), "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="move_unhide_is_create",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/common/a.txt"), "Target": node("/ds/common/.a.txt")},
        [COMMON],
        [{"Type": "DELETE", "Source": seen("common-files/a.txt", COMMON)}],
        id="move_hide_is_delete",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/a/f"), "Target": node("/ds/common/f")},
        [WS_A, COMMON],
        [{"Type": "DELETE", "Source": seen("a/f", WS_A)}, {"Target": seen("common-files/f", COMMON)}],
        id="move_between_workspaces",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/x/f"), "Target": node("/ds/y/g")},
        [MULTI],
        [{"Type": "UPDATE_PATH", "Source": seen("multi/f", MULTI), "Target": seen("multi/g", MULTI)}],
        id="move_between_roots_of_one_workspace",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": "not a node", "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="move_source_not_an_object",
    ),
    # An invalid path counts as outside every workspace: it is never sent, the valid side may be.
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/common/a.txt"), "Target": node("/ds/common/../x/a")},
        [COMMON, ALL],
        [
            {"Type": "DELETE", "Source": seen("common-files/a.txt", COMMON)},
            {"Type": "DELETE", "Source": seen("all/common/a.txt", ALL)},
        ],
        id="move_to_invalid_path_is_delete",
    ),
    pytest.param(
        {"Type": "UPDATE_PATH", "Source": node("/ds/x/./a"), "Target": node("/ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="move_from_invalid_path_is_create",
    ),
    # -- rewriting: meta, fields -------------------------------------------------------------
    pytest.param(
        {
            "Target": node(
                "/ds/common/a.txt",
                MetaStore={
                    "name": '"a.txt"',
                    "pydio:meta-data-source-name": '"pydiods1"',
                    "pydio:anything": "1",
                },
            )
        },
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON, meta={"name": '"a.txt"'})}],
        id="pydio_meta_removed",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt", MetaStore={"EventWorkspaceId": '"forged"'})},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="workspace_meta_overwritten",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt", MetaStore="oops")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="metastore_not_a_dict",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt", MetaStore=None)},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="metastore_null",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt", MetaStore=["x"])},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="metastore_list",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt", Size="2048", MTime="1764000000", Etag="abc")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON, Size="2048", MTime="1764000000", Etag="abc")}],
        id="node_fields_kept",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt"), "Optimistic": True, "Silent": False, "Metadata": {"x": "y"}},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="only_type_source_target",
    ),
    # -- hidden names ------------------------------------------------------------------------
    pytest.param({"Target": node("/ds/common/.pydio")}, [COMMON], [], id="pydio_file_hidden"),
    pytest.param({"Target": node("/ds/common/sub/.pydio")}, [COMMON], [], id="nested_pydio_file_hidden"),
    pytest.param({"Target": node("/ds/common/.DS_Store")}, [COMMON], [], id="dot_file_hidden"),
    pytest.param({"Target": node("/ds/common/.hidden/a.txt")}, [COMMON], [], id="inside_hidden_folder"),
    pytest.param({"Target": node("/ds/common/a/.git/config")}, [COMMON], [], id="deep_hidden_folder"),
    pytest.param({"Type": "DELETE", "Source": node("/ds/common/.hidden")}, [COMMON], [], id="delete_hidden"),
    pytest.param(
        {"Target": node("/ds/common/a.b/c.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.b/c.txt", COMMON)}],
        id="dots_inside_names_visible",
    ),
    pytest.param(
        {"Target": node("/ds/.sys/f")},
        [SYS, ALL],
        [{"Target": seen("sys/f", SYS)}],
        id="hidden_only_below_root",
    ),
    # -- path shapes -------------------------------------------------------------------------
    pytest.param(
        {"Target": node("/ds/common")},
        [COMMON],
        [{"Target": seen("common-files/", COMMON, meta={"ws_root": '"true"'})}],
        id="node_exactly_at_root",
    ),
    pytest.param(
        {"Target": node("ds/common/a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="no_leading_slash",
    ),
    pytest.param(
        {"Target": node("/ds//common///a.txt")},
        [COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="double_slashes",
    ),
    pytest.param(
        {"Target": node("/ds/common/dir/")},
        [COMMON],
        [{"Target": seen("common-files/dir", COMMON)}],
        id="trailing_slash",
    ),
    pytest.param({"Target": node("/ds/common/../secret/a.txt")}, [COMMON, ALL], [], id="dotdot_segment"),
    pytest.param({"Target": node("/ds/common/./a.txt")}, [COMMON, ALL], [], id="dot_segment"),
    pytest.param({"Target": node("/ds/common/..")}, [COMMON, ALL], [], id="dotdot_at_end"),
    pytest.param({"Target": node("/ds/common/a\x00.txt")}, [COMMON], [], id="control_character"),
    pytest.param({"Target": node("/ds/common/a\n.txt")}, [COMMON], [], id="newline"),
    pytest.param(
        {"Type": "DELETE", "Source": node("/ds/common/../common/a")}, [COMMON], [], id="delete_dotdot"
    ),
    pytest.param({"Target": node(None)}, [COMMON], [], id="missing_path"),
    pytest.param({"Target": node("")}, [COMMON], [], id="empty_path"),
    pytest.param({"Target": node(None, Path=42)}, [COMMON], [], id="path_not_a_string"),
    pytest.param({"Target": "ds/common/a.txt"}, [COMMON], [], id="target_not_an_object"),
    pytest.param({"Target": ["ds/common/a.txt"]}, [COMMON], [], id="target_a_list"),
    pytest.param({"Type": "DELETE", "Source": "ds/common/a.txt"}, [COMMON], [], id="source_not_an_object"),
    pytest.param({}, [COMMON], [], id="empty_event"),
    # -- roots -------------------------------------------------------------------------------
    pytest.param({"Target": node("/ds/ab/x")}, [WS_A], [], id="root_string_prefix_not_within"),
    pytest.param({"Target": node("/ds/ab")}, [WS_A], [], id="root_string_prefix_exact"),
    pytest.param(
        {"Target": node("/ds/ab/x")},
        [WS_A, WS_AB],
        [{"Target": seen("ab/x", WS_AB)}],
        id="prefix_roots_pick_the_right_one",
    ),
    pytest.param(
        {"Target": node("/ds/a/x")},
        [WS_A, WS_AB],
        [{"Target": seen("a/x", WS_A)}],
        id="prefix_roots_pick_the_shorter",
    ),
    pytest.param({"Target": node("/ds")}, [COMMON], [], id="parent_of_root_not_visible"),
    pytest.param(
        {"Target": node("/ds/common/a.txt")},
        [COMMON, ALL],
        [{"Target": seen("common-files/a.txt", COMMON)}, {"Target": seen("all/common/a.txt", ALL)}],
        id="two_workspaces_one_message_each",
    ),
    pytest.param(
        {"Type": "DELETE", "Source": node("/ds/common/a.txt")},
        [COMMON, ALL],
        [
            {"Type": "DELETE", "Source": seen("common-files/a.txt", COMMON)},
            {"Type": "DELETE", "Source": seen("all/common/a.txt", ALL)},
        ],
        id="two_workspaces_delete",
    ),
    pytest.param(
        {"Target": node("/ds/common/a.txt")},
        [COMMON, COMMON],
        [{"Target": seen("common-files/a.txt", COMMON)}],
        id="same_workspace_twice_one_message",
    ),
    pytest.param(
        {"Target": node("/ds/x/f")}, [MULTI], [{"Target": seen("multi/f", MULTI)}], id="several_roots_first"
    ),
    pytest.param(
        {"Target": node("/ds/y/f")}, [MULTI], [{"Target": seen("multi/f", MULTI)}], id="several_roots_second"
    ),
    pytest.param({"Target": node("/ds/z/f")}, [MULTI], [], id="several_roots_none"),
    pytest.param(
        {"Target": node("/ds/common/a.txt")},
        [NESTED],
        [{"Target": seen("nested/a.txt", NESTED)}],
        id="nested_roots_deepest_wins",
    ),
    pytest.param(
        {"Target": node("/ds/a.txt")},
        [WHOLE],
        [{"Target": seen("whole/ds/a.txt", WHOLE)}],
        id="root_of_everything",
    ),
]


@TOPICS
@pytest.mark.parametrize(("event", "workspaces", "expected"), TREE_CASES)
def test_tree_rules(topic: str, event: Json, workspaces: list[Workspace], expected: list[Json]) -> None:
    check(topic, event, identity(*workspaces), expected)


@TOPICS
def test_tree_create_has_no_type_key(topic: str) -> None:
    for event in ({"Target": node("/ds/common/a")}, {"Type": "CREATE", "Target": node("/ds/common/a")}):
        [message] = messages_for(topic, event, identity(COMMON))
        assert set(message) == {"Target"}


@TOPICS
def test_tree_move_workspace_meta_on_both_nodes(topic: str) -> None:
    event = {
        "Type": "UPDATE_PATH",
        "Source": node("/ds/common/a", MetaStore={"pydio:x": "1"}),
        "Target": node("/ds/common/b", MetaStore={"pydio:x": "1"}),
    }
    [message] = messages_for(topic, event, identity(COMMON))
    for key in ("Source", "Target"):
        assert message[key]["MetaStore"] == {"EventWorkspaceId": '"ws-common"'}


def test_tree_unknown_topic_routes_nothing() -> None:
    assert route("topic.pydio.unknown", {"Target": node("/ds/common/a")}, covering_from([COMMON])) == []


def test_tree_one_delivery_per_workspace_with_audience() -> None:
    deliveries = route(TREE_TOPIC, {"Target": node("/ds/common/a")}, covering_from([COMMON, ALL]))
    assert len(deliveries) == 2
    assert {d.message["Target"]["Path"] for d in deliveries} == {"common-files/a", "all/common/a"}
    assert not any(reaches(d, identity(WS_A)) for d in deliveries)


# ---------------------------------------------------------------------------------------------
# UPDATE_USER_META


def policy(subject: str, action: Any = 2, effect: Any = 1) -> Json:
    out: Json = {"Subject": subject}
    if action is not None:
        out["Action"] = action
    if effect is not None:
        out["Effect"] = effect
    return out


def user_meta(policies: Any, path: str = "/ds/common/a.txt", *, encode: bool = True) -> Json:
    raw = json.dumps(policies) if encode else policies
    meta = {"pydio:meta-policies": raw, "usermeta-tags": '"x"'}
    return {
        "Type": "UPDATE_USER_META",
        "Source": node(path, MetaStore=meta),
        "Target": node(path, MetaStore={**meta, "usermeta-tags": '"y"'}),
    }


ALICE = identity(COMMON)
BOB = identity(COMMON, user="bob")
SHARED = identity(COMMON, user="carol", profile="shared")
ADMIN = identity(COMMON, user="dave", profile="admin")
ROLE = identity(COMMON, user="erin", roles=("r-team",))
ANON = identity(COMMON, user="frank", profile="anon")
EVERYONE = {"alice": ALICE, "bob": BOB, "carol": SHARED, "dave": ADMIN, "erin": ROLE, "frank": ANON}

USER_META_CASES = [
    pytest.param([policy("user:alice")], {"alice"}, id="allow_user"),
    pytest.param([policy("user:alice", "READ", "allow")], {"alice"}, id="allow_enum_names"),
    pytest.param([policy("*")], set(EVERYONE), id="allow_everyone"),
    pytest.param([policy("profile:standard")], {"alice", "bob", "dave", "erin"}, id="allow_profile_up"),
    pytest.param(
        [policy("profile:shared")], {"alice", "bob", "carol", "dave", "erin"}, id="allow_profile_shared"
    ),
    pytest.param([policy("profile:admin")], {"dave"}, id="allow_admin_only"),
    pytest.param([policy("profile:anon")], set(EVERYONE), id="allow_anon_and_up"),
    pytest.param([policy("role:r-team")], {"erin"}, id="allow_role"),
    pytest.param([policy("user:alice", action=3)], set(), id="allow_write_is_not_read"),
    pytest.param([policy("user:alice", effect=None)], set(), id="missing_effect_is_deny"),
    pytest.param([policy("user:alice", effect=0)], set(), id="deny_effect"),
    pytest.param(
        [policy("*"), policy("user:alice", effect="deny")],
        set(EVERYONE) - {"alice"},
        id="deny_wins_over_allow",
    ),
    pytest.param([policy("*"), policy("profile:shared", effect=0)], {"frank"}, id="deny_profile"),
    pytest.param(
        [policy("*"), policy("role:r-team", action=None, effect=0)],
        set(EVERYONE) - {"erin"},
        id="deny_any_action",
    ),
    pytest.param(
        [policy("*"), policy("user:alice", action=3, effect=0)], set(EVERYONE), id="deny_write_ignored"
    ),
    pytest.param([], set(), id="no_policies"),
    pytest.param([{"Action": 2, "Effect": 1}], set(), id="policy_without_subject"),
    pytest.param(
        [policy("user:alice", action=[2]), policy("user:bob", effect={"x": 1}), policy("user:erin")],
        {"erin"},
        id="malformed_enums_fail_closed",
    ),
    pytest.param([policy("user:alice", effect=True)], set(), id="boolean_effect_is_not_allow"),
    pytest.param(
        [{**policy("user:alice"), "JsonConditions": '{"x":{}}'}],
        set(),
        id="conditional_allow_ignored",
    ),
]


@TOPICS
@pytest.mark.parametrize(("policies", "receivers"), USER_META_CASES)
def test_tree_user_meta_policies(topic: str, policies: list[Json], receivers: set[str]) -> None:
    event = user_meta(policies)
    expected = {
        "Type": "UPDATE_USER_META",
        "Target": seen("common-files/a.txt", COMMON, meta={"usermeta-tags": '"y"'}),
    }
    for name, who in EVERYONE.items():
        check(topic, event, who, [expected] if name in receivers else [])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not json", id="not_json"),
        pytest.param(json.dumps({"Subject": "*", "Action": 2, "Effect": 1}), id="object_not_list"),
        pytest.param("[" * 100_000, id="deeply_nested"),
        pytest.param(42, id="not_a_string"),
    ],
)
def test_tree_user_meta_bad_policies_deliver_nothing(raw: Any) -> None:
    check(TREE_TOPIC, user_meta(raw, encode=False), ALICE, [])


def test_tree_user_meta_policies_missing() -> None:
    event = {"Type": "UPDATE_USER_META", "Target": node("/ds/common/a.txt")}
    check(TREE_TOPIC, event, ALICE, [])


def test_tree_user_meta_still_needs_the_workspace() -> None:
    check(TREE_TOPIC, user_meta([policy("*")], "/ds/other/a.txt"), ALICE, [])


def test_tree_user_meta_hidden_not_sent() -> None:
    check(TREE_TOPIC, user_meta([policy("*")], "/ds/common/.hidden/a.txt"), ALICE, [])


def test_tree_user_meta_without_target_not_sent() -> None:
    event = user_meta([policy("*")])
    del event["Target"]
    check(TREE_TOPIC, event, ALICE, [])


def test_tree_user_meta_per_workspace() -> None:
    event = user_meta([policy("user:alice")])
    expected = [
        {"Type": "UPDATE_USER_META", "Target": seen(path, ws, meta={"usermeta-tags": '"y"'})}
        for path, ws in (("common-files/a.txt", COMMON), ("all/common/a.txt", ALL))
    ]
    check(TREE_TOPIC, event, identity(COMMON, ALL), expected)
    check(TREE_TOPIC, event, identity(COMMON, ALL, user="bob"), [])

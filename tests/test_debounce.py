"""The per-node tree-event debouncer, sans-IO: every call passes the time explicitly."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.events.debounce import Debouncer
from gateway.events.tree import DEBOUNCED_TYPES
from gateway.identity.claims import identity_from_claims
from gateway.paths import normalize
from tests.helpers import TREE, fixed_cases
from tests.routing import messages_for

Json = dict[str, Any]
QUIET = 1.0
DEBOUNCED = sorted(DEBOUNCED_TYPES)
WS_A = {"uuid": "ws-a", "slug": "team-a", "roots": ["/ds/a"], "permissions": "rw"}


def normalize_or_none(path: str | None) -> str | None:
    return normalize(path) if path else None


def target(uuid: str = "n-1", path: str | None = "/ds/common/a.txt", **fields: Any) -> Json:
    out: Json = {"Uuid": uuid, **fields}
    if path is not None:
        out["Path"] = path
    return out


def event(kind: str | None = None, uuid: str = "n-1", source: Json | None = None, **fields: Any) -> Json:
    out: Json = {"Target": target(uuid, **fields)}
    if kind is not None:
        out["Type"] = kind
    if source is not None:
        out["Source"] = source
    return out


def test_debounce_quiet_zero_passes_through() -> None:
    debouncer = Debouncer(0, max_pending=10)
    first, second = event(), event("UPDATE_CONTENT")
    assert debouncer.add(first, now=0) == [first]
    assert debouncer.add(second, now=0) == [second]
    assert len(debouncer) == 0
    assert debouncer.next_deadline() is None


def test_debounce_waits_for_quiet_period() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    created = event(Size="1")
    assert debouncer.add(created, now=10.0) == []
    assert len(debouncer) == 1
    assert debouncer.next_deadline() == 11.0
    assert debouncer.due(10.9) == []
    assert debouncer.due(11.0) == [{"Target": target(Size="1", MetaStore={})}]
    assert len(debouncer) == 0
    assert debouncer.next_deadline() is None
    assert debouncer.due(20.0) == []


def test_debounce_quiet_period_reset_by_each_event() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(), now=0.0)
    debouncer.add(event("UPDATE_CONTENT"), now=0.8)
    debouncer.add(event("UPDATE_CONTENT"), now=1.6)
    assert debouncer.next_deadline() == pytest.approx(2.6)
    assert debouncer.due(1.0) == []
    assert debouncer.due(2.5) == []
    [merged] = debouncer.due(2.6)
    assert "Type" not in merged


def test_debounce_nodes_independent_and_released_in_deadline_order() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(uuid="a"), now=0.0)
    debouncer.add(event(uuid="b"), now=0.5)
    debouncer.add(event("UPDATE_CONTENT", uuid="a"), now=0.7)  # a now waits until 1.7
    assert [e["Target"]["Uuid"] for e in debouncer.due(1.5)] == ["b"]
    assert [e["Target"]["Uuid"] for e in debouncer.due(1.7)] == ["a"]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([None, "UPDATE_CONTENT", "UPDATE_META"], None),
        (["UPDATE_META", "CREATE", "UPDATE_META"], None),
        (["UPDATE_META", "UPDATE_CONTENT", "UPDATE_META"], "UPDATE_CONTENT"),
        (["UPDATE_CONTENT", "UPDATE_META"], "UPDATE_CONTENT"),
        (["UPDATE_META", "UPDATE_META"], "UPDATE_META"),
        (["UPDATE_CONTENT"], "UPDATE_CONTENT"),
        (["CREATE"], None),
    ],
)
def test_debounce_merged_type(kinds: list[str | None], expected: str | None) -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    for kind in kinds:
        assert debouncer.add(event(kind), now=0.0) == []
    [merged] = debouncer.flush()
    assert merged.get("Type") == expected
    if expected is None:
        assert "Type" not in merged


def test_debounce_merge_target_fields() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    first = event(Type="LEAF", Etag="e1", Size="1", MTime="100", MetaStore={"name": '"a"', "keep": "1"})
    later = event(
        "UPDATE_CONTENT",
        path="ds/common//a.txt/",  # the same path, written otherwise
        Etag="e2",
        Size="2",
        MTime="200",
        MetaStore={"name": '"b"', "new": "2"},
    )
    temporary = event("UPDATE_META", Etag="temporary", MetaStore={"other": "3"})
    for item in (first, later, temporary):
        debouncer.add(item, now=0.0)
    [merged] = debouncer.due(QUIET)
    assert merged == {
        "Target": {
            "Uuid": "n-1",
            "Path": "/ds/common/a.txt",  # the first Target's path
            "Type": "LEAF",
            "Etag": "e2",  # later Etag, but not "temporary"
            "Size": "2",
            "MTime": "200",
            "MetaStore": {"name": '"b"', "keep": "1", "new": "2", "other": "3"},
        }
    }


def test_debounce_merge_type_field_laid_over() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(Type="LEAF"), now=0.0)
    debouncer.add(event("UPDATE_META", Type="COLLECTION"), now=0.0)
    [merged] = debouncer.flush()
    assert merged["Target"]["Type"] == "COLLECTION"


def test_debounce_other_path_releases_the_waiting_batch_first() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    assert debouncer.add(event(path=None, Etag="e0"), now=0.0) == []
    [pathless] = debouncer.add(event("UPDATE_CONTENT", path="/ds/a/x", Etag="e1"), now=0.1)
    assert pathless == {"Target": target(path=None, Etag="e0", MetaStore={})}  # routed nowhere, alone
    assert debouncer.add(event("UPDATE_META", path="/ds/a/x", Size="1"), now=0.2) == []
    [first] = debouncer.add(event("UPDATE_META", path="/ds/b/x", Etag="e2"), now=0.3)
    assert first == {
        "Type": "UPDATE_CONTENT",
        "Target": target(path="/ds/a/x", Etag="e1", Size="1", MetaStore={}),
    }
    assert debouncer.next_deadline() == pytest.approx(1.3)  # the new batch's own quiet period
    assert debouncer.due(1.3) == [
        {"Type": "UPDATE_META", "Target": target(path="/ds/b/x", Etag="e2", MetaStore={})}
    ]


def test_debounce_never_merges_across_workspaces() -> None:
    # The adversarial finding: the same node uuid in workspace A, then in B, within the quiet
    # period. alice (a member of A only) received bob's name, Etag, Size and tags.
    alice = identity_from_claims({"name": "alice", "workspaces": [WS_A]})
    in_a = event(path="/ds/a/report.txt", Etag="alice-etag", Size="10", MetaStore={"name": '"report.txt"'})
    in_b = event("UPDATE_META", path="/ds/b/salaries.txt", Etag="bob-etag", Size="99",
                 MetaStore={"name": '"salaries.txt"', "usermeta-tags": '"bob,secret"'})  # fmt: skip
    debouncer = Debouncer(QUIET, max_pending=10)
    released = debouncer.add(in_a, now=0.0) + debouncer.add(in_b, now=0.5) + debouncer.due(10.0)
    seen = [m for e in released for m in messages_for(TREE, e, alice)]
    assert len(seen) == 1
    assert seen[0]["Target"]["Etag"] == "alice-etag" and seen[0]["Target"]["Size"] == "10"
    text = json.dumps(seen)
    assert not any(secret in text for secret in ("bob", "salaries", "99"))


_PATHS = ("/ds/a/x", "/ds/b/x", "ds/a/x/", None)


@given(st.lists(st.tuples(st.sampled_from(_PATHS), st.sampled_from(DEBOUNCED), st.floats(0, 3)), max_size=30))
@fixed_cases(300)
def test_debounce_property_metadata_stays_on_its_path_and_in_order(
    steps: list[tuple[str | None, str, float]],
) -> None:
    """Every released Target carries only fields of events at its own path, and events leave in order."""
    debouncer = Debouncer(QUIET, max_pending=3)
    released: list[Json] = []
    now = 0.0
    for i, (path, kind, wait) in enumerate(steps):
        now += wait
        released += debouncer.due(now)
        released += debouncer.add(event(kind, path=path, Etag=f"e{i}", MetaStore={f"m{i}": "1"}), now)
    released += debouncer.flush()
    order = []
    for out in released:
        sources = {int(key[1:]) for key in out["Target"]["MetaStore"]}
        assert {normalize_or_none(steps[i][0]) for i in sources} == {
            normalize_or_none(out["Target"].get("Path"))
        }
        assert int(out["Target"]["Etag"][1:]) in sources
        order += sorted(sources)
    assert order == list(range(len(steps)))  # each event exactly once, in order


def test_debounce_merge_empty_fields_do_not_erase() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(Etag="e1", Size="5", MTime="9"), now=0.0)
    debouncer.add(event("UPDATE_META", Etag="", Size="", MetaStore="not a dict"), now=0.0)
    [merged] = debouncer.flush()
    assert merged["Target"] == target(Etag="e1", Size="5", MTime="9", MetaStore={})


def test_debounce_merge_last_source() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(source=target(path="/one")), now=0.0)
    debouncer.add(event("UPDATE_CONTENT", source=target(path="/two")), now=0.0)
    [merged] = debouncer.flush()
    assert merged["Source"] == target(path="/two")
    debouncer.add(event(source=target(path="/one")), now=0.0)
    debouncer.add(event("UPDATE_CONTENT"), now=0.0)
    [merged] = debouncer.flush()
    assert "Source" not in merged


def test_debounce_does_not_modify_inputs() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    events = [event(MetaStore={"a": "1"}), event("UPDATE_META", Etag="x", MetaStore={"b": "2"})]
    before = copy.deepcopy(events)
    for item in events:
        debouncer.add(item, now=0.0)
    debouncer.flush()
    assert events == before


@pytest.mark.parametrize(
    "immediate",
    [
        pytest.param({"Type": "DELETE", "Source": target()}, id="delete"),
        pytest.param({"Type": "UPDATE_PATH", "Source": target(), "Target": target(path="/b")}, id="move"),
        pytest.param(
            {"Type": "UPDATE_PATH", "Source": target(), "Target": target("n-other")}, id="move_by_source_uuid"
        ),
        pytest.param({"Type": "UPDATE_USER_META", "Target": target()}, id="user_meta"),
    ],
)
def test_debounce_immediate_event_releases_pending_batch_first(immediate: Json) -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(), now=0.0)
    debouncer.add(event(uuid="unrelated"), now=0.0)
    released = debouncer.add(immediate, now=0.1)
    assert released == [{"Target": target(MetaStore={})}, immediate]
    assert len(debouncer) == 1  # the unrelated node still waits
    assert [e["Target"]["Uuid"] for e in debouncer.flush()] == ["unrelated"]


def test_debounce_immediate_event_for_other_node_passes_alone() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(), now=0.0)
    delete = {"Type": "DELETE", "Source": target("n-2")}
    assert debouncer.add(delete, now=0.1) == [delete]
    assert len(debouncer) == 1


@pytest.mark.parametrize(
    "passing",
    [
        pytest.param({"Target": {"Path": "/ds/common/a"}}, id="target_without_uuid"),
        pytest.param({"Target": {"Uuid": "", "Path": "/ds/common/a"}}, id="empty_uuid"),
        pytest.param({"Target": {"Uuid": 7, "Path": "/ds/common/a"}}, id="uuid_not_a_string"),
        pytest.param({"Type": "UPDATE_CONTENT", "Target": "n-1"}, id="target_not_an_object"),
        pytest.param({"Source": {"Uuid": "n-9"}}, id="create_without_target"),
        pytest.param({"Type": "READ", "Target": {"Uuid": "n-9"}}, id="read"),
    ],
)
def test_debounce_events_without_node_key_pass_at_once(passing: Json) -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    assert debouncer.add(passing, now=0.0) == [passing]
    assert len(debouncer) == 0


def test_debounce_max_pending_releases_oldest() -> None:
    debouncer = Debouncer(QUIET, max_pending=2)
    assert debouncer.add(event(uuid="a"), now=0.0) == []
    assert debouncer.add(event(uuid="b"), now=0.1) == []
    assert debouncer.add(event("UPDATE_CONTENT", uuid="a"), now=0.2) == []  # a merge adds no node
    [released] = debouncer.add(event(uuid="c"), now=0.3)  # oldest deadline is b's now
    assert released["Target"]["Uuid"] == "b"
    assert len(debouncer) == 2
    assert [e["Target"]["Uuid"] for e in debouncer.flush()] == ["a", "c"]


def test_debounce_max_pending_zero_releases_everything() -> None:
    debouncer = Debouncer(QUIET, max_pending=0)
    assert debouncer.add(event(), now=0.0) == [{"Target": target(MetaStore={})}]
    assert len(debouncer) == 0


def test_debounce_flush_releases_all_in_order() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    for i, uuid in enumerate(("x", "y", "z")):
        debouncer.add(event(uuid=uuid), now=float(i))
    assert [e["Target"]["Uuid"] for e in debouncer.flush()] == ["x", "y", "z"]
    assert len(debouncer) == 0
    assert debouncer.flush() == []
    assert debouncer.next_deadline() is None


def test_debounce_released_batch_starts_fresh() -> None:
    debouncer = Debouncer(QUIET, max_pending=10)
    debouncer.add(event(), now=0.0)
    assert len(debouncer.due(1.0)) == 1
    debouncer.add(event("UPDATE_META", Etag="e9"), now=2.0)
    [again] = debouncer.due(3.0)
    assert again == {"Type": "UPDATE_META", "Target": target(Etag="e9", MetaStore={})}

"""The hub's indexes against the pure rules: fan-out must deliver exactly what messages_for says.

Sessions are built directly (no sockets, no trio run): fan-out appends encoded frames to the
streams of the sessions' audiences; the tests take what each session would send and decode it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import route
from gateway.events.model import (
    Audience,
    ToAdmins,
    ToRole,
    ToSub,
    ToUser,
    ToWorkspace,
    ToWorkspaceUuid,
)
from gateway.flusher import Flusher
from gateway.handshake import CHAT, EVENTS
from gateway.hub import Hub
from gateway.identity import PROFILES, Identity, Workspace
from gateway.protocol import CloseCode, json_frame
from gateway.session import Session
from gateway.topics import ACTIVITY_TOPIC, IDM_TOPIC, META_TOPIC, TASKS_TOPIC, TREE_TOPIC
from tests.helpers import hand_session, make_hub, pending_frames
from tests.routing import audience_matches, covering_from, messages_for, reaches

Json = dict[str, Any]

USERS = ["alice", "bob", "carol", "pydio.system.user"]
SUBS = ["u-alice", "u-bob", "u-x"]
ROLES = ["r1", "r2", "r3"]
UUIDS = ["w1", "w2", "w3"]
SEGMENTS = ["ds", "a", "ab", "b", ".h"]
SUBJECTS = [
    "*",
    "user:alice",
    "user:bob",
    "profile:shared",
    "profile:standard",
    "profile:admin",
    "role:r1",
    "role:r2",
]
TREE_TYPES = [
    "CREATE",
    "READ",
    "UPDATE_PATH",
    "UPDATE_CONTENT",
    "UPDATE_META",
    "DELETE",
    "UPDATE_USER_META",
    "BOGUS",
]


# ---------------------------------------------------------------------------------------------
# Sessions and frames


def make_session(hub: Hub, endpoint: str = EVENTS, max_lag: int = 10_000_000) -> Session:
    return hand_session(hub, endpoint, max_lag=max_lag)


def payload(frame: bytes) -> Json:
    """Decode one unmasked server text frame."""
    assert frame[0] == 0x81, "a single, final text frame"
    assert not frame[1] & 0x80, "server frames are not masked"
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    assert len(frame) == offset + length
    message = json.loads(frame[offset:].decode())
    assert isinstance(message, dict)
    return message


def canonical(messages: list[Json]) -> list[str]:
    return sorted(json.dumps(m, sort_keys=True) for m in messages)


def fan_out(hub: Hub, topic: str, event: Json) -> int:
    return hub.fan_out(topic, route(topic, event, hub.covering))


def received(session: Session) -> list[Json]:
    return [payload(frame) for frame in pending_frames(session)]


# ---------------------------------------------------------------------------------------------
# Strategies

# Prefixes ("ds/a" vs "ds/ab"), nesting ("ds" > "ds/a" > "ds/a/b"), a hidden root, the whole tree.
ROOTS = ["ds/a", "ds/ab", "ds", "ds/a/b", "ds/.h", "b", ""]
workspaces = st.builds(
    Workspace,
    uuid=st.sampled_from(UUIDS),
    slug=st.sampled_from(["s1", "s2"]),
    roots=st.lists(st.sampled_from(ROOTS), min_size=1, max_size=2, unique=True).map(tuple),
    permissions=st.sampled_from(["r", "rw"]),
)


def identities(pool: list[Workspace]) -> st.SearchStrategy[Identity]:
    return st.builds(
        Identity,
        user=st.sampled_from(USERS),
        sub=st.sampled_from(SUBS),
        profile=st.sampled_from(PROFILES),
        roles=st.lists(st.sampled_from(ROLES), max_size=2, unique=True).map(tuple),
        workspaces=st.lists(st.sampled_from(pool), min_size=1, max_size=3).map(tuple),  # repeats too
    )


def raw_paths(pool: list[Workspace]) -> st.SearchStrategy[str]:
    """Paths near the pool's roots, written loosely (slashes), sometimes invalid or hidden."""
    bases = [root for ws in pool for root in ws.roots] + ["c"]
    suffixes = st.lists(st.sampled_from([*SEGMENTS, "f", "f", "g", "", "..", ".", ".pydio"]), max_size=3)
    return st.builds(
        lambda lead, base, parts, trail: (
            ("/" if lead else "") + "/".join([base, *parts]) + ("/" if trail else "")
        ),
        st.booleans(),
        st.sampled_from(bases),
        suffixes,
        st.booleans(),
    )


def policy(subject: str, action: object, effect: object) -> Json:
    fields = {"Subject": subject, "Action": action, "Effect": effect}
    return {key: value for key, value in fields.items() if value is not None}  # zero values omitted


policies = st.lists(
    st.builds(
        policy,
        st.sampled_from(SUBJECTS),
        st.sampled_from([2, "READ", 3, None]),
        st.sampled_from([1, "allow", 0, None]),
    ),
    min_size=1,
    max_size=3,
).map(json.dumps)
meta_stores = st.fixed_dictionaries(
    {"name": st.just('"f"'), "pydio:meta-policies": policies},
    optional={"pydio:x": st.just('"1"'), "EventWorkspaceId": st.just("0")},
)


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws (hypothesis favours the first choice, so it is False)."""
    return draw(st.sampled_from([*([False] * (one_in - 1)), True]))


@st.composite
def nodes(draw: st.DrawFn, pool: list[Workspace]) -> Json:
    node: Json = {"Uuid": "n-1", "Type": draw(st.sampled_from(["LEAF", "COLLECTION"]))}
    if not sometimes(draw, 8):
        node["Path"] = draw(raw_paths(pool))
    if not sometimes(draw, 5):
        node["MetaStore"] = draw(st.just("oops") if sometimes(draw, 6) else meta_stores)
    return node


@st.composite
def tree_events(draw: st.DrawFn, pool: list[Workspace]) -> Json:
    """Mostly well-formed events of every type; sometimes a node is missing or not an object."""
    kind = draw(st.sampled_from([*TREE_TYPES, None]))
    event: Json = {} if kind is None else {"Type": kind}
    if not sometimes(draw, 6):
        event["Target"] = draw(nodes(pool))
    if kind in ("UPDATE_PATH", "DELETE", "UPDATE_USER_META") or sometimes(draw, 3):
        event["Source"] = "x" if sometimes(draw, 8) else draw(nodes(pool))
    return event


task_events = st.fixed_dictionaries(
    {
        "TaskUpdated": st.fixed_dictionaries(
            {"ID": st.just("t-1"), "TriggerOwner": st.sampled_from([*USERS, ""])}
        )
    },
    optional={"Job": st.just({"ID": "j-1"})},
)
idm_events = st.fixed_dictionaries(
    {"Type": st.sampled_from(["CREATE", "UPDATE", "DELETE"])},
    optional={
        "Acl": st.fixed_dictionaries(
            {},
            optional={
                "RoleID": st.sampled_from(ROLES),
                "Action": st.fixed_dictionaries(
                    {"Name": st.sampled_from(["read", "parameter:x", "action:y"])}
                ),
            },
        ),
        "Role": st.fixed_dictionaries({}, optional={"Uuid": st.sampled_from(ROLES)}),
        "User": st.fixed_dictionaries(
            {}, optional={"Login": st.sampled_from(USERS), "Uuid": st.sampled_from(SUBS)}
        ),
        "Workspace": st.fixed_dictionaries({}, optional={"UUID": st.sampled_from(UUIDS)}),
    },
)


def activity_events(pool: list[Workspace]) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {
            "OwnerType": st.sampled_from(["USER", "NODE"]),
            "OwnerId": st.sampled_from(USERS),
            "BoxName": st.sampled_from(["inbox", "outbox"]),
            "Activity": st.fixed_dictionaries(
                {"actor": st.fixed_dictionaries({"id": st.sampled_from(USERS)})},
                optional={"object": st.fixed_dictionaries({"name": raw_paths(pool)})},
            ),
        }
    )


def events_for(topic: str, pool: list[Workspace]) -> st.SearchStrategy[Json]:
    if topic in (TREE_TOPIC, META_TOPIC):
        return tree_events(pool)
    if topic == TASKS_TOPIC:
        return task_events
    if topic == IDM_TOPIC:
        return idm_events
    return activity_events(pool)


Scenario = tuple[list[Workspace], list[Identity], tuple[str, Json]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    pool = draw(st.lists(workspaces, min_size=1, max_size=4))
    people = draw(st.lists(identities(pool), min_size=1, max_size=5))
    # Tree events are weighted up: their rules are the richest.
    topic = draw(
        st.sampled_from([TREE_TOPIC, TREE_TOPIC, META_TOPIC, TASKS_TOPIC, IDM_TOPIC, ACTIVITY_TOPIC])
    )
    return pool, people, (topic, draw(events_for(topic, pool)))


# ---------------------------------------------------------------------------------------------
# Properties


def check_delivery(
    hub: Hub, live: dict[Session, Identity], quiet: list[Session], topic: str, event: Json
) -> None:
    """Fan one event out; each live session gets exactly messages_for, the others nothing."""
    deliveries = route(topic, event, hub.covering)
    queued = hub.fan_out(topic, deliveries)
    frames = {s: pending_frames(s) for s in [*live, *quiet]}
    for session, who in live.items():
        got = [payload(frame) for frame in frames[session]]
        assert canonical(got) == canonical(messages_for(topic, event, who)), (session, who)
    for session in quiet:
        assert frames[session] == [], session
    all_frames = [f for fs in frames.values() for f in fs]
    assert queued == len(all_frames)
    # Each delivery is encoded once: one bytes object per delivery that reached anybody.
    reaching = [d for d in deliveries if any(reaches(d, who) for who in live.values())]
    assert len({id(f) for f in all_frames}) == len(reaching)


def all_audiences(pool: list[Workspace]) -> list[Audience]:
    return [
        *(ToUser(u) for u in USERS),
        *(ToSub(s) for s in SUBS),
        *(ToRole(r) for r in ROLES),
        ToAdmins(),
        *(ToWorkspaceUuid(u) for u in UUIDS),
        *(ToWorkspace(ws) for ws in pool),
    ]


def check_indexes(hub: Hub, live: dict[Session, Identity], pool: list[Workspace]) -> None:
    """Every index agrees with audience_matches over the live sessions; covering too."""
    for audience in all_audiences(pool):
        expected = {s for s, who in live.items() if audience_matches(audience, who)}
        assert hub.recipients([audience]) == expected, audience
    reference = covering_from([ws for who in live.values() for ws in who.workspaces])
    for path in {root for ws in pool for root in ws.roots} | {"ds/a/f", "ds/ab/b/f", "x"}:
        assert set(hub.covering(path)) == set(reference(path)), path


@given(scenarios())
@settings(max_examples=200, deadline=None)
def test_hub_fan_out_matches_pure_rules(scenario: Scenario) -> None:
    pool, who, topic_event = scenario
    hub = make_hub()
    live = {}
    for identity in who:
        session = make_session(hub)
        hub.start_delivering(session, identity)
        live[session] = identity
    chat = make_session(hub, CHAT)
    hub.start_delivering(chat, who[0])
    idle = make_session(hub)  # connected, never subscribed
    check_indexes(hub, live, pool)
    check_delivery(hub, live, [chat, idle], *topic_event)


OPERATIONS = st.lists(
    st.tuples(
        st.integers(0, 3), st.sampled_from(["subscribe", "unsubscribe", "close", "remove"]), st.integers(0, 4)
    ),
    max_size=12,
)


@given(scenarios(), OPERATIONS)
@settings(max_examples=200, deadline=None)
def test_hub_indexes_follow_subscribe_unsubscribe_close(
    scenario: Scenario, operations: list[tuple[int, str, int]]
) -> None:
    pool, who, topic_event = scenario
    hub = make_hub()
    sessions = [make_session(hub) for _ in range(4)]
    live: dict[Session, Identity] = {}
    gone: set[Session] = set()
    for index, operation, pick in operations:
        session = sessions[index]
        if session in gone:
            continue
        if operation == "subscribe" and session.closing is None:
            hub.start_delivering(session, who[pick % len(who)])
            live[session] = who[pick % len(who)]
        elif operation == "unsubscribe":
            hub.stop_delivering(session)
            live.pop(session, None)
        elif operation == "close":
            session.close(CloseCode.SLOW_CONSUMER, "test")
            live.pop(session, None)
        elif operation == "remove":
            hub.remove(session)
            live.pop(session, None)
            gone.add(session)
        check_indexes(hub, live, pool)
    for session in sessions:
        pending_frames(session)  # drop close frames, if any
    check_delivery(hub, live, [s for s in sessions if s not in live], *topic_event)
    for session in sessions:
        hub.remove(session)
    check_indexes(hub, {}, pool)
    assert hub.sessions == set()


# ---------------------------------------------------------------------------------------------
# Examples

COMMON = Workspace("ws-common", "common-files", ("ds/common",), "rw")
ALL = Workspace("ws-all", "all", ("ds",))


def alice(*spaces: Workspace, user: str = "alice") -> Identity:
    return Identity(user=user, sub=f"u-{user}", workspaces=spaces)


def test_hub_resubscribe_reindexes() -> None:
    hub = make_hub()
    session = make_session(hub)
    hub.start_delivering(session, alice(COMMON))
    hub.start_delivering(session, alice(ALL, user="bob"))
    assert hub.recipients([ToUser("alice"), ToWorkspace(COMMON)]) == set()
    assert hub.recipients([ToUser("bob")]) == {session}
    assert {ws for ws, _root in hub.covering("ds/common/a")} == {ALL}
    fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": "n", "Path": "/ds/common/a"}})
    assert [m["Target"]["Path"] for m in received(session)] == ["all/common/a"]


def test_hub_stop_delivering_removes() -> None:
    hub = make_hub()
    session = make_session(hub)
    hub.start_delivering(session, alice(COMMON))
    hub.stop_delivering(session)
    assert not session.subscribed
    assert fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": "n", "Path": "/ds/common/a"}}) == 0
    assert fan_out(hub, IDM_TOPIC, {"User": {"Login": "alice"}}) == 0
    assert list(hub.covering("ds/common/a")) == []
    assert received(session) == []
    hub.stop_delivering(session)  # idempotent


def test_hub_closed_session_leaves_the_indexes() -> None:
    hub = make_hub()
    session = make_session(hub)
    hub.start_delivering(session, alice(COMMON))
    session.close(CloseCode.SLOW_CONSUMER, "too slow")
    assert hub.recipients([ToUser("alice"), ToWorkspace(COMMON)]) == set()
    assert list(hub.covering("ds/common/a")) == []
    hub.remove(session)
    assert hub.sessions == set()
    assert hub.count_from("127.0.0.1") == 0


def test_hub_duplicate_workspace_in_identity() -> None:
    hub = make_hub()
    session = make_session(hub)
    hub.start_delivering(session, alice(COMMON, COMMON))
    assert fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": "n", "Path": "/ds/common/a"}}) == 1
    hub.stop_delivering(session)
    assert list(hub.covering("ds/common/a")) == []
    hub.start_delivering(session, alice(COMMON))
    assert [ws for ws, _root in hub.covering("ds/common/a")] == [COMMON]


def test_hub_shared_workspace_kept_while_one_session_holds_it() -> None:
    hub = make_hub()
    first, second = make_session(hub), make_session(hub)
    hub.start_delivering(first, alice(COMMON))
    hub.start_delivering(second, alice(COMMON, user="bob"))
    hub.remove(first)
    assert [ws for ws, _root in hub.covering("ds/common/a")] == [COMMON]
    fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": "n", "Path": "/ds/common/a"}})
    assert len(received(second)) == 1


def count_encodings(monkeypatch: pytest.MonkeyPatch) -> list[Json]:
    """Every message the hub encodes from now on (the list fills as it does)."""
    calls: list[Json] = []

    def counting(obj: Json) -> bytes:
        calls.append(obj)
        return json_frame(obj)

    monkeypatch.setattr("gateway.delivery.log.json_frame", counting)
    return calls


def test_hub_encodes_each_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_encodings(monkeypatch)
    hub = make_hub()
    commons = [make_session(hub) for _ in range(3)]
    for i, session in enumerate(commons):
        hub.start_delivering(session, alice(COMMON, user=f"user{i}"))
    both = make_session(hub)
    hub.start_delivering(both, alice(COMMON, ALL, user="zoe"))
    outsider = make_session(hub)
    hub.start_delivering(outsider, alice(user="nobody"))

    assert fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": "n", "Path": "/ds/common/a"}}) == 5
    assert len(calls) == 2  # one per workspace, not one per session
    frames = [pending_frames(s) for s in commons]
    assert all(len(f) == 1 for f in frames)
    assert frames[0][0] is frames[1][0] is frames[2][0]
    zoe = pending_frames(both)
    assert len(zoe) == 2
    assert frames[0][0] in zoe
    assert pending_frames(outsider) == []


def test_hub_nobody_to_reach_encodes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_encodings(monkeypatch)
    hub = make_hub()
    hub.start_delivering(make_session(hub), alice(COMMON))
    assert fan_out(hub, TASKS_TOPIC, {"TaskUpdated": {"TriggerOwner": "bob"}}) == 0
    assert calls == []


def test_hub_chat_sessions_not_indexed() -> None:
    hub = make_hub()
    session = make_session(hub, CHAT)
    hub.start_delivering(session, alice(COMMON))
    assert session.subscribed
    assert hub.recipients([ToUser("alice")]) == set()
    assert list(hub.covering("ds/common")) == []


def test_hub_slow_consumer_closed_and_unindexed_others_served() -> None:
    hub = make_hub()
    slow = make_session(hub, max_lag=200)
    fast = make_session(hub)
    hub.start_delivering(slow, alice(COMMON))
    hub.start_delivering(fast, alice(COMMON, user="bob"))
    for name in ("a", "b", "c"):
        fan_out(hub, TREE_TOPIC, {"Target": {"Uuid": name, "Path": f"/ds/common/{name}"}})
    Flusher(hub).flush(hub.take_dirty(), {})  # neither has a socket: both lag by three frames
    assert slow.closing is not None
    assert slow.closing.code == CloseCode.SLOW_CONSUMER
    assert hub.recipients([ToWorkspace(COMMON)]) == {fast}
    assert [m["Target"]["Path"] for m in received(fast)] == [f"common-files/{n}" for n in "abc"]
    [error] = received(slow)  # the queue was discarded for the error frame
    assert error["@type"] == "error"

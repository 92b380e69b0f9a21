"""Isolation: no session ever receives an event outside its rights, and every entitled one gets it.

Generated populations of sessions (identities built from token claims, the way a subscribe builds
them) receive generated tree, meta, task, idm and activity events through the real router and the
real Hub (sessions without sockets, as in ``tests/test_hub.py``). Paths and roots are hostile: ``..``
and ``.`` segments, ``//``, trailing slashes, roots that are string prefixes of other roots, look-alike
slashes (U+2215, U+FF0F, backslash), NFC against NFD, hidden names, control characters.

Two checks per delivered message, both written from ``docs/PROTOCOL.md`` and not from the router:

(a) ``assert_within_rights``: invariants any message a session receives must satisfy (a tree node's
    Path starts with the slug of one of ITS workspaces, its original path lies within that
    workspace's root by segment comparison, no hidden segment, ``EventWorkspaceId`` is that
    workspace's uuid, no ``pydio:*`` meta; tasks only to their owner or, for system tasks, admins;
    activities never to the actor; idm per its first-key rule);
(b) ``expected_messages``: an oracle of exactly what the session must receive (one message per
    entitled workspace, rewritten), compared as a multiset with what it did receive.

The chat room access rules get the same treatment over ``gateway.chat.access.check_room``.
Every ``@given`` here is derandomized and has no example database, so CI runs the same cases.
"""

from __future__ import annotations

import itertools
import json
import random
import unicodedata
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.chat.access import check_room
from gateway.chat.protocol import ANY, GLOBAL, NODE, USER, WORKSPACE, RoomRef, user_room_key, user_room_peer
from gateway.chat.rules import Grant
from gateway.events import route
from gateway.handshake import CHAT, EVENTS
from gateway.hub import Hub
from gateway.identity import PROFILES, Identity
from gateway.identity.claims import identity_from_claims
from gateway.protocol import AuthError, CloseCode, ErrorCode, ProtocolError
from gateway.session import Session
from gateway.topics import ACTIVITY_TOPIC, IDM_TOPIC, META_TOPIC, TASKS_TOPIC, TREE_TOPIC
from tests.helpers import fixed_cases, hand_session, make_hub, pending_frames
from tests.test_hub import payload

Json = dict[str, Any]
T = TypeVar("T")

SYSTEM_USER = "pydio.system.user"
TREE_TOPICS = (TREE_TOPIC, META_TOPIC)


deterministic = fixed_cases


# ---------------------------------------------------------------------------------------------
# The oracle's own view of paths (RFC-free, from the protocol text: segments split on "/" only)

NFC_CAFE = unicodedata.normalize("NFC", "café")
NFD_CAFE = unicodedata.normalize("NFD", "café")
assert NFC_CAFE != NFD_CAFE

# Root segments: prefixes of each other ("a"/"ab"), case, NFC/NFD, look-alike slashes, a hidden root.
ROOT_SEGMENTS = ["ds", "a", "ab", "A", NFC_CAFE, NFD_CAFE, "a\u2215b", "a\uff0fb", "a\\b", ".h", "b"]
# Path segments add dot segments, hidden names, controls, invisible and bidi characters.
PATH_SEGMENTS = [
    *ROOT_SEGMENTS,
    "f.txt",
    "a b",
    ".",
    "..",
    "...",
    ".pydio",
    "..h",
    "h.",
    "%2e%2e",
    "x\x00y",
    "\x1f",
    "\x7f",
    "x\x85",
    "\u200b",
    "\u202e",
    "e\u0301",
]


def is_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def oracle_segments(raw: object) -> list[str] | None:
    """The segments of a node path, or None when the protocol says it is never delivered.

    An empty or missing Path is the protobuf zero value (no path); "." and ".." segments and
    control characters make a path undeliverable; "//" and leading/trailing slashes are noise.
    """
    if not isinstance(raw, str) or raw == "" or is_control(raw):
        return None
    segments = [s for s in raw.split("/") if s]
    if any(s in (".", "..") for s in segments):
        return None
    return segments


@dataclass(frozen=True)
class WsDef:
    """A workspace as the generator wrote it into the token (raw roots, not normalised)."""

    uuid: str
    slug: str
    raw_roots: tuple[str, ...]

    def claim(self, permissions: str) -> Json:
        return {
            "uuid": self.uuid,
            "slug": self.slug,
            "roots": list(self.raw_roots),
            "permissions": permissions,
        }

    @property
    def valid(self) -> bool:
        """A token naming an undeliverable root must be refused ("/" is the whole tree)."""
        return all(oracle_segments(r) is not None for r in self.raw_roots)

    def root_segments(self) -> list[list[str]]:
        out = []
        for raw in self.raw_roots:
            segments = oracle_segments(raw)
            assert segments is not None
            out.append(segments)
        return out


def deepest_root(ws: WsDef, path: list[str]) -> list[str] | None:
    """The deepest of the workspace's roots that equals the path or is a segment-prefix of it."""
    covering = [r for r in ws.root_segments() if path[: len(r)] == r]
    return max(covering, key=len) if covering else None


def seen_in(ws: WsDef, node: object) -> list[str] | None:
    """The node's segments below the workspace root if the workspace shows it, else None."""
    if not isinstance(node, dict):
        return None
    path = oracle_segments(node.get("Path"))
    if path is None:
        return None
    root = deepest_root(ws, path)
    if root is None:
        return None
    below = path[len(root) :]
    if any(s.startswith(".") for s in below):
        return None
    return below


def shown(ws: WsDef, node: Json, below: list[str]) -> Json:
    out = dict(node)
    out["Path"] = "/".join([ws.slug, *below]) if below else ws.slug + "/"  # the root: "<slug>/"
    meta = node.get("MetaStore")
    clean = {k: v for k, v in meta.items() if not k.startswith("pydio:")} if isinstance(meta, dict) else {}
    if not below:
        clean["ws_root"] = '"true"'
    clean["EventWorkspaceId"] = json.dumps(ws.uuid)
    out["MetaStore"] = clean
    return out


# ---------------------------------------------------------------------------------------------
# The oracle: what one session must receive, per topic


@dataclass(frozen=True)
class Person:
    """One subscribed session as the oracle sees it: the claims, and the workspaces it holds."""

    user: str
    sub: str
    profile: str
    roles: tuple[str, ...]
    workspaces: tuple[WsDef, ...]

    def subjects(self) -> set[str]:
        rank = PROFILES.index(self.profile)
        return {
            "*",
            f"user:{self.user}",
            *(f"profile:{p}" for p in PROFILES[: rank + 1]),
            *(f"role:{r}" for r in self.roles),
        }


def person_from_claims(claims: Json, spaces: tuple[WsDef, ...]) -> Person:
    """The oracle's reading of the claims: roles a list or a comma-separated string, trimmed."""
    raw = claims.get("roles") or []
    roles = raw.split(",") if isinstance(raw, str) else raw
    return Person(
        user=claims["name"],
        sub=str(claims.get("sub", claims["name"])),
        profile=claims.get("profile", "anon"),
        roles=tuple(r.strip() for r in roles if r.strip()),
        workspaces=spaces,
    )


def policy_allows(source: object, person: Person) -> bool:
    """Deny by default; an allow needs action READ and no conditions; a matching deny wins."""
    meta = source.get("MetaStore") if isinstance(source, dict) else None
    raw = meta.get("pydio:meta-policies") if isinstance(meta, dict) else None
    try:
        policies = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return False
    if not isinstance(policies, list):
        return False
    subjects = person.subjects()
    allowed = denied = False
    for p in policies:
        if not isinstance(p, dict) or p.get("Subject") not in subjects:
            continue
        action, effect = p.get("Action"), p.get("Effect")
        if effect in (1, "allow"):
            allowed |= action in (2, "READ") and not p.get("JsonConditions")
        else:  # a missing Effect is the zero value: deny
            denied |= action in (2, "READ", 0, "ANY", None)
    return allowed and not denied


def expected_tree(event: Json, person: Person) -> list[Json]:
    kind = event.get("Type") or "CREATE"
    if kind not in ("CREATE", "UPDATE_PATH", "UPDATE_CONTENT", "UPDATE_META", "DELETE", "UPDATE_USER_META"):
        return []  # READ, unknown names, non-strings
    source, target = event.get("Source"), event.get("Target")
    if kind == "UPDATE_USER_META" and not policy_allows(source, person):
        return []
    out = []
    for ws in dict.fromkeys(person.workspaces):
        s_below, t_below = seen_in(ws, source), seen_in(ws, target)
        s = shown(ws, source, s_below) if s_below is not None else None  # type: ignore[arg-type]
        t = shown(ws, target, t_below) if t_below is not None else None  # type: ignore[arg-type]
        message: Json | None
        if kind == "UPDATE_PATH":
            if s is not None and t is not None:
                message = {"Type": kind, "Source": s, "Target": t}
            elif t is not None:
                message = {"Target": t}  # moved in: a creation
            elif s is not None:
                message = {"Type": "DELETE", "Source": s}  # moved out: a deletion
            else:
                message = None
        elif kind == "DELETE":
            message = {"Type": kind, "Source": s} if s is not None else None
        elif kind == "UPDATE_USER_META":
            message = {"Type": kind, "Target": t} if t is not None else None  # Source dropped
        elif isinstance(target, dict):  # CREATE / UPDATE_*: about the Target when there is one
            message = None if t is None else {"Target": t} if s is None else {"Source": s, "Target": t}
        else:
            message = {"Source": s} if s is not None else None
        if message is not None:
            if kind not in ("CREATE", "UPDATE_PATH", "DELETE", "UPDATE_USER_META"):
                message = {"Type": kind, **message}
            out.append(message)
    return out


def expected_task(event: Json, person: Person) -> list[Json]:
    task = event.get("TaskUpdated")
    owner = task.get("TriggerOwner") if isinstance(task, dict) else None
    if not isinstance(owner, str) or not owner:
        return []
    entitled = person.profile == "admin" if owner == SYSTEM_USER else person.user == owner
    if not entitled:
        return []
    return [event]  # whole, NanoStamp and StatusMeta included


def _text(obj: object, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


def expected_idm(event: Json, person: Person) -> list[Json]:
    acl, user = event.get("Acl"), event.get("User")
    action = acl.get("Action") if isinstance(acl, dict) else None
    if _text(acl, "RoleID") and not _text(action, "Name").startswith(("parameter:", "action:")):
        entitled = _text(acl, "RoleID") in person.roles
    elif _text(event.get("Role"), "Uuid"):
        entitled = _text(event.get("Role"), "Uuid") in person.roles
    elif _text(user, "Login"):
        entitled = _text(user, "Login") == person.user
    elif _text(user, "Uuid"):
        entitled = _text(user, "Uuid") == person.sub
    elif _text(event.get("Workspace"), "UUID"):
        entitled = any(ws.uuid == _text(event.get("Workspace"), "UUID") for ws in person.workspaces)
    else:
        entitled = False
    if not entitled:
        return []
    if not isinstance(user, dict):
        return [{**event, "@type": "idm"}]
    public = {k: v for k, v in user.items() if k not in ("Password", "OldPassword")}
    attributes = user.get("Attributes")
    if isinstance(attributes, dict):
        public.pop("Attributes")
        if kept := {k: v for k, v in attributes.items() if not k.startswith("pydio:")}:
            public["Attributes"] = kept
    return [{**event, "@type": "idm", "User": {**public, "PoliciesContextEditable": True}}]


def basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def expected_activity(event: Json, person: Person) -> list[Json]:
    if event.get("BoxName") != "inbox" and event.get("OwnerType") != "USER":
        return []
    activity = event.get("Activity")
    if event.get("OwnerId") != person.user or not isinstance(activity, dict):
        return []
    actor = activity.get("actor")
    if isinstance(actor, dict) and actor.get("id") == person.user:
        return []
    cut = dict(activity)
    for part in ("object", "origin", "target"):
        obj = activity.get(part)
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            cut[part] = {**obj, "name": basename(obj["name"])}
    return [{**event, "Activity": cut, "@type": "activity"}]


def expected_messages(topic: str, event: Json, person: Person) -> list[Json]:
    if topic in TREE_TOPICS:
        return expected_tree(event, person)
    if topic == TASKS_TOPIC:
        return expected_task(event, person)
    if topic == IDM_TOPIC:
        return expected_idm(event, person)
    return expected_activity(event, person)


# ---------------------------------------------------------------------------------------------
# (a) Invariants of anything delivered, without computing the expected set


def assert_tree_within_rights(message: Json, event: Json, person: Person) -> None:
    assert set(message) <= {"Type", "Source", "Target"}, message
    assert message.get("Type") != "READ"
    owners = set()
    for key in ("Source", "Target"):
        if key not in message:
            continue
        node, original = message[key], event.get(key)
        assert isinstance(original, dict), "a node was invented"
        uuid = json.loads(node["MetaStore"]["EventWorkspaceId"])
        [ws] = [w for w in dict.fromkeys(person.workspaces) if w.uuid == uuid]  # one of ITS workspaces
        owners.add(ws)
        path = node["Path"]
        assert path.startswith(ws.slug + "/"), (path, ws)
        assert not is_control(path)
        segments = oracle_segments(original.get("Path"))
        assert segments is not None, original
        roots = [r for r in ws.root_segments() if segments[: len(r)] == r]
        assert roots, (segments, ws)  # within the workspace root, by segment comparison
        assert any(
            ("/".join([ws.slug, *segments[len(r) :]]) if segments[len(r) :] else ws.slug + "/") == path
            and not any(s.startswith(".") for s in segments[len(r) :])
            for r in roots
        ), (path, segments, ws)
        assert not any(k.startswith("pydio:") for k in node["MetaStore"]), node
    assert len(owners) == 1, "Source and Target of one message shown in two workspaces"
    if event.get("Type") == "UPDATE_USER_META":
        assert policy_allows(event.get("Source"), person)


def assert_within_rights(topic: str, message: Json, event: Json, person: Person) -> None:
    if topic in TREE_TOPICS:
        assert_tree_within_rights(message, event, person)
    elif topic == TASKS_TOPIC:
        owner = message["TaskUpdated"]["TriggerOwner"]
        assert owner == person.user if owner != SYSTEM_USER else person.profile == "admin", (owner, person)
    elif topic == IDM_TOPIC:
        assert message["@type"] == "idm" and expected_idm(event, person), (event, person)
    else:
        assert message["@type"] == "activity" and message["OwnerId"] == person.user
        actor = message["Activity"].get("actor")
        assert not (isinstance(actor, dict) and actor.get("id") == person.user), "sent to the actor"
        for part in ("object", "origin", "target"):
            name = _text(message["Activity"].get(part), "name")
            assert "/" not in name, name  # cut to its basename: no path leaks


# ---------------------------------------------------------------------------------------------
# Strategies. Hypothesis draws the structure (how many workspaces, sessions and events, which
# event type, which node shape); leaves come from tables built once, deterministically, so that a
# case costs a few dozen draws: the 10,000 cases of this file run in well under a minute.

STYLES = [("", "/", ""), ("/", "/", ""), ("/", "/", "/"), ("", "//", "/"), ("//", "/", "")]


def written(segments: tuple[str, ...], index: int) -> str:
    """``segments`` written loosely (leading, doubled and trailing slashes), by a fixed style."""
    lead, sep, trail = STYLES[index % len(STYLES)]
    return lead + sep.join(segments) + trail


def combinations(pool: list[str], depth: int) -> list[tuple[str, ...]]:
    return [combo for n in range(1, depth + 1) for combo in itertools.product(pool, repeat=n)]


ROOT_TABLE = [written(c, i) for i, c in enumerate(combinations(ROOT_SEGMENTS, 2))]
PATH_TABLE = [written(c, i) for i, c in enumerate(combinations(PATH_SEGMENTS, 2))]
_rng = random.Random(20260101)  # fixed: the tables are the same on every run
PATH_TABLE += [written(tuple(_rng.choices(PATH_SEGMENTS, k=3)), i) for i in range(400)]
# Appended to a root: the root itself, below it (plainly, or hostile), or beside it ("/ds/a" + "b").
SUFFIX_TABLE = ["", "/", "//"] + ["/" + p for p in PATH_TABLE] + ["b", "\u2215b", NFD_CAFE[-1:]]
SUFFIX_TABLE += ["", "/f.txt", "/b", "/b/f.txt/", "//f.txt", "/a b"] * 300  # plain ones, often
# "/" is the whole tree; the others must make the gateway refuse the token.
ODD_ROOTS = ["/", "/ds/../x", "ds/./a", "/ds/a\x00", "ds/\x85", "..", "/ds/a/.."]
SLUGS = ["s1", "s2", "common-files", "a\u2215b", NFC_CAFE, "s1"]

USERS = ["alice", "Alice", "bob", "alice\u200b", SYSTEM_USER, "carol"]
SUBS = ["u-alice", "u-bob", "alice", "u-carol"]
ROLES = ["r1", "r2", "R1", "r1 "]
ROLE_CLAIMS: list[object] = ["", "r1", "r1,r2", "R1", "r1 ,", ["r1"], ["r2", "r1 "], [], "r2"]
PERSONAS = list(itertools.product(USERS, SUBS, PROFILES, ROLE_CLAIMS))
SUBJECTS = [
    "*",
    "user:alice",
    "user:Alice",
    "user:bob",
    "profile:anon",
    "profile:shared",
    "profile:standard",
    "profile:admin",
    "role:r1",
    "role:R1",
    "role:r2",
]


def _random_policy() -> Json:
    fields = {
        "Subject": _rng.choice(SUBJECTS),
        "Action": _rng.choice([2, "READ", 3, "WRITE", None]),
        "Effect": _rng.choice([1, "allow", 0, "deny", None]),
    }
    policy = {k: v for k, v in fields.items() if v is not None}  # zero values omitted
    if _rng.random() < 0.1:
        policy["JsonConditions"] = '{"x": 1}'
    return policy


def _random_meta() -> Json:
    meta: Json = {"name": '"f"'}
    if _rng.random() < 0.7:
        policies = [_random_policy() for _ in range(_rng.randint(0, 2))]
        if _rng.random() < 0.5:  # an allow is what makes a user-meta change visible at all
            subject = _rng.choice(["*", "profile:anon", "profile:standard", "user:alice", "role:r1"])
            policies.insert(0, {"Subject": subject, "Action": _rng.choice([2, "READ"]), "Effect": 1})
        meta["pydio:meta-policies"] = json.dumps(policies) if _rng.random() < 0.95 else "not json"
    if _rng.random() < 0.5:
        meta["pydio:meta-data-source-name"] = '"pydiods1"'
    if _rng.random() < 0.25:
        meta["EventWorkspaceId"] = '"forged"'
    return meta


ABSENT = object()
META_TABLE: list[object] = [_random_meta() for _ in range(400)] + ["oops", [], 3, ABSENT, ABSENT]
NODE_SHAPES = [("LEAF", None), ("COLLECTION", None), ("LEAF", "12"), ("COLLECTION", "0")]
BAD_NODES: list[object] = ["x", 3, None, ["n"]]
ODD_PATHS: list[object] = ["", "/", 5, None]


def one_in(n: int) -> st.SearchStrategy[bool]:
    return st.sampled_from([False] * (n - 1) + [True])


# Leaf strategies, built once: a sampled_from over a long table hashes the table when built.
PERSONA = st.sampled_from(PERSONAS)
PERMISSIONS = st.sampled_from(list(itertools.product(["r", "w", "rw"], repeat=3)))
NODE_FORM = st.sampled_from(["near"] * 6 + ["free", "free", "odd", "bad"])
BAD_NODE = st.sampled_from(BAD_NODES)
NODE_EXTRAS = st.sampled_from(list(itertools.product(NODE_SHAPES, META_TABLE)))
ODD_PATH = st.sampled_from(ODD_PATHS)
SUFFIX = st.sampled_from(SUFFIX_TABLE)
PATH = st.sampled_from(PATH_TABLE)
TREE_TYPE = st.sampled_from(
    ["CREATE", "READ", "UPDATE_PATH", "UPDATE_CONTENT", "UPDATE_META", "DELETE", "UPDATE_USER_META", "BOGUS",
     "", None, "UPDATE_PATH", "UPDATE_USER_META", "UPDATE_USER_META"]
)  # fmt: skip
ONE_IN_3, ONE_IN_6, ONE_IN_8 = one_in(3), one_in(6), one_in(8)


def _random_root(previous: list[str]) -> str:
    """A loosely written root; half the time a relative of an earlier one (child, parent, sibling)."""
    if previous and _rng.random() < 0.5:
        base = [s for s in _rng.choice(previous).split("/") if s]
        relation = _rng.choice(["child", "parent", "sibling"])
        if relation == "child" or not base:
            base.append(_rng.choice(ROOT_SEGMENTS))
        elif relation == "parent" and len(base) > 1:
            base.pop()
        else:  # "a" next to "ab", "a\u2215b", "A", NFC next to NFD...
            base[-1] = _rng.choice(ROOT_SEGMENTS)
        return written(tuple(base), _rng.randrange(len(STYLES)))
    return _rng.choice(ROOT_TABLE)


def _random_pool() -> list[WsDef]:
    pool: list[WsDef] = []
    roots: list[str] = []
    for i in range(_rng.randint(1, 4)):
        mine = [_random_root(roots) for _ in range(_rng.choice([1, 1, 2]))]
        if _rng.random() < 1 / 12:  # the whole tree, or a root the gateway must refuse
            mine.append(_rng.choice(ODD_ROOTS))
        roots += mine
        pool.append(WsDef(f"w{i}", _rng.choice(SLUGS), tuple(mine)))
    return pool


POOLS = st.sampled_from([_random_pool() for _ in range(3000)])
MEMBERSHIPS = st.integers(0, 15)  # a bit mask over the pool: which workspaces the token names


@st.composite
def people(draw: st.DrawFn, pool: list[WsDef]) -> tuple[Json, tuple[WsDef, ...]]:
    """Token claims of one session, and the workspaces they name."""
    mask = draw(MEMBERSHIPS)
    spaces = tuple(ws for i, ws in enumerate(pool) if mask >> i & 1)
    user, sub, profile, roles = draw(PERSONA)
    permissions = draw(PERMISSIONS)
    claims: Json = {
        "name": user,
        "sub": sub,
        "profile": profile,
        "roles": roles,
        "workspaces": [ws.claim(p) for ws, p in zip(spaces, permissions * 2, strict=False)],
    }
    return claims, spaces


@st.composite
def nodes(draw: st.DrawFn, roots: list[str]) -> object:
    form = draw(NODE_FORM)
    if form == "bad":
        return draw(BAD_NODE)
    (kind, size), meta = draw(NODE_EXTRAS)
    node: Json = {"Uuid": "n-1", "Type": kind}
    if size is not None:
        node["Size"] = size
    if form == "odd":
        node["Path"] = draw(ODD_PATH)
    elif form == "near":  # at, below or beside a root of the pool (a look-alike sibling)
        node["Path"] = draw(st.sampled_from(roots)) + draw(SUFFIX)
    else:
        node["Path"] = draw(PATH)
    if meta is not ABSENT:
        node["MetaStore"] = meta
    return node


NEEDS_SOURCE = ("UPDATE_PATH", "DELETE", "UPDATE_USER_META")


@st.composite
def tree_events(draw: st.DrawFn, pool: list[WsDef]) -> Json:
    roots = [r for ws in pool for r in ws.raw_roots]
    if draw(st.booleans()):  # Source and Target near the same root: moves within a workspace
        roots = [draw(st.sampled_from(roots))]
    kind = draw(TREE_TYPE)
    event: Json = {} if kind is None else {"Type": kind}
    if not draw(ONE_IN_8):
        event["Target"] = draw(nodes(roots))
    if kind in NEEDS_SOURCE or draw(ONE_IN_3):
        event["Source"] = draw(nodes(roots))
    if draw(ONE_IN_6):
        event["Optimistic"] = True  # not forwarded
    return event


def _maybe(**fields: object) -> Json:
    """An object with the fields that are not ABSENT (zero values are omitted on the wire)."""
    return {k: v for k, v in fields.items() if v is not ABSENT}


TASK_TABLE = [
    {"TaskUpdated": _maybe(ID="t-1", Status="Running", TriggerOwner=owner), **job}
    for owner in [*USERS, "", 7, ABSENT]
    for job in ({}, {"Job": {"ID": "j-1", "Owner": "alice"}})
]
_ACLS = [ABSENT] + [
    _maybe(RoleID=role, Action=action)
    for role in [*ROLES, "", ABSENT]
    for action in [ABSENT, *({"Name": n} for n in ["read", "write", "parameter:x", "action:y"])]
]
_ROLES = [ABSENT] + [_maybe(Uuid=r) for r in [*ROLES, "", ABSENT]]
_USERS = [ABSENT] + [_maybe(Login=u, Uuid=s) for u in [*USERS, "", ABSENT] for s in [*SUBS, "", ABSENT]]
_WORKSPACES = [ABSENT] + [_maybe(UUID=u) for u in ["w0", "w1", "w2", "w9", "", ABSENT]]
IDM_TABLE = [
    _maybe(Type=_rng.choice(["CREATE", "UPDATE", "DELETE"]), Acl=acl, Role=role, User=user, Workspace=ws)
    for acl, role, user, ws in itertools.product(_ACLS, _ROLES, _USERS, _WORKSPACES)
    if _rng.random() < 0.4
]
_NAMED = [ABSENT, *({"name": _rng.choice(PATH_TABLE), "id": "n-1"} for _ in range(30))]
ACTIVITY_TABLE = [
    _maybe(
        OwnerType=_rng.choice(["USER", "NODE"]),
        OwnerId=_rng.choice(USERS),
        BoxName=_rng.choice(["inbox", "outbox", "subscriptions"]),
        Activity=_maybe(
            type="Update",
            actor=_rng.choice([ABSENT, "someone", *({"id": u} for u in USERS)]),
            object=_rng.choice(_NAMED),
            origin=_rng.choice(_NAMED),
            target=_rng.choice(_NAMED),
        ),
    )
    for _ in range(3000)
]
task_events, idm_events, activity_events = map(st.sampled_from, (TASK_TABLE, IDM_TABLE, ACTIVITY_TABLE))


def events_for(topic: str, pool: list[WsDef]) -> st.SearchStrategy[Json]:
    if topic in TREE_TOPICS:
        return tree_events(pool)
    if topic == TASKS_TOPIC:
        return task_events
    if topic == IDM_TOPIC:
        return idm_events
    return activity_events


Scenario = tuple[list[WsDef], list[tuple[Json, tuple[WsDef, ...]]], list[tuple[str, Json]]]


@st.composite
def scenarios(draw: st.DrawFn, topics: tuple[str, ...]) -> Scenario:
    pool = draw(POOLS)
    population = draw(st.lists(people(pool), min_size=1, max_size=5))
    chosen = draw(st.lists(st.sampled_from(topics), min_size=1, max_size=3))
    return pool, population, [(topic, draw(events_for(topic, pool))) for topic in chosen]


# ---------------------------------------------------------------------------------------------
# Driving the real Hub and router


def make_session(hub: Hub, endpoint: str = EVENTS) -> Session:
    return hand_session(hub, endpoint, max_lag=50_000_000)


def canonical(messages: list[Json]) -> Counter[str]:
    return Counter(json.dumps(m, sort_keys=True) for m in messages)


def resolve_claims(claims: Json) -> Identity | AuthError:
    try:
        return identity_from_claims(claims)
    except AuthError as err:
        return err


def subscribe_all(hub: Hub, population: list[tuple[Json, tuple[WsDef, ...]]]) -> dict[Session, Person]:
    """One session per token that the gateway accepts; refused tokens are checked and dropped."""
    live: dict[Session, Person] = {}
    for claims, spaces in population:
        identity = resolve_claims(claims)
        if isinstance(identity, AuthError):
            assert identity.code == ErrorCode.TOKEN_CLAIMS
            assert not all(ws.valid for ws in spaces), "a valid token was refused"
            continue
        assert all(ws.valid for ws in spaces), f"a token with an invalid root was accepted: {claims}"
        person = person_from_claims(claims, spaces)
        assert (identity.user, identity.sub, identity.profile) == (person.user, person.sub, person.profile)
        assert set(identity.roles) == set(person.roles)
        session = make_session(hub)
        hub.start_delivering(session, identity)
        live[session] = person
    return live


def bystanders(hub: Hub, population: list[tuple[Json, tuple[WsDef, ...]]]) -> list[Session]:
    """Sessions that must receive nothing: chat, unsubscribed, closed, never subscribed."""
    identity = resolve_claims(population[0][0])
    if isinstance(identity, AuthError):
        return [make_session(hub)]
    chat, gone, closed, idle = (
        make_session(hub, CHAT),
        make_session(hub),
        make_session(hub),
        make_session(hub),
    )
    for session in (chat, gone, closed):
        hub.start_delivering(session, identity)
    hub.stop_delivering(gone)
    closed.close(CloseCode.NORMAL, "bye")
    pending_frames(closed)
    return [chat, gone, closed, idle]


def check_scenario(scenario: Scenario) -> int:
    """Fan every event out; check (a) and (b) for every session. Returns messages delivered."""
    _pool, population, events = scenario
    hub = make_hub()
    live = subscribe_all(hub, population)
    quiet = bystanders(hub, population)
    delivered = 0
    for topic, event in events:
        before = json.dumps(event, sort_keys=True)
        hub.fan_out(topic, route(topic, event, hub.covering))
        assert json.dumps(event, sort_keys=True) == before, "routing modified the event"
        for session, person in live.items():
            got = [payload(frame) for frame in pending_frames(session)]
            for message in got:
                assert_within_rights(topic, message, event, person)  # (a)
            assert canonical(got) == canonical(expected_messages(topic, event, person)), (
                person,
                event,
            )  # (b)
            delivered += len(got)
        for session in quiet:
            assert pending_frames(session) == [], session
    return delivered


# ---------------------------------------------------------------------------------------------
# Properties: 10,000 generated event cases (6,000 + 3,000 + 1,000), derandomized


@given(scenarios(TREE_TOPICS))
@deterministic(6000)
def test_isolation_tree_and_meta_events(scenario: Scenario) -> None:
    check_scenario(scenario)


@given(scenarios((TASKS_TOPIC, IDM_TOPIC, ACTIVITY_TOPIC)))
@deterministic(3000)
def test_isolation_task_idm_activity_events(scenario: Scenario) -> None:
    check_scenario(scenario)


@given(scenarios((TREE_TOPIC, META_TOPIC, TASKS_TOPIC, IDM_TOPIC, ACTIVITY_TOPIC)))
@deterministic(1000)
def test_isolation_mixed_topics(scenario: Scenario) -> None:
    check_scenario(scenario)


HOSTILE_EXAMPLES = [
    # (workspace roots as written in the token, event path, paths the session must see)
    pytest.param(["/ds/a"], "/ds/ab/x", [], id="root_is_a_string_prefix"),
    pytest.param(["/ds/a"], "/ds/a\u2215b/x", [], id="division_slash_is_not_a_separator"),
    pytest.param(["/ds/a\u2215b"], "/ds/a/b/x", [], id="division_slash_root_is_one_segment"),
    pytest.param(["/ds/a"], "/ds/a\uff0fx", [], id="fullwidth_solidus_is_not_a_separator"),
    pytest.param(["/ds/a"], "/ds\\a/x", [], id="backslash_is_not_a_separator"),
    pytest.param([f"/ds/{NFC_CAFE}"], f"/ds/{NFD_CAFE}/x", [], id="nfd_path_not_under_nfc_root"),
    pytest.param([f"/ds/{NFD_CAFE}"], f"/ds/{NFD_CAFE}/x", ["s/x"], id="nfd_path_under_nfd_root"),
    pytest.param(["/ds/a"], "/ds/a/../b/x", [], id="dot_dot_escape"),
    pytest.param(["/ds/a"], "/ds/a/./x", [], id="dot_segment"),
    pytest.param(["/ds/a"], "//ds//a//x//", ["s/x"], id="double_and_trailing_slashes"),
    pytest.param(["/ds/a"], "/ds/a", ["s/"], id="the_root_itself"),
    pytest.param(["/ds/a"], "/ds/a/.hidden/x", [], id="inside_hidden_folder"),
    pytest.param(["/ds/a"], "/ds/a/x/.pydio", [], id="pydio_file"),
    pytest.param(["/ds/.h"], "/ds/.h/x", ["s/x"], id="hidden_root_shows_its_content"),
    pytest.param(["/ds/a"], "/ds/a/x\x00y", [], id="nul"),
    pytest.param(["/ds/a"], "/ds/a/x\x85y", [], id="c1_control"),
    pytest.param(["/ds/a"], "/ds/a/\u202ex", ["s/\u202ex"], id="bidi_override_is_a_name"),
    pytest.param(["/ds", "/ds/a/b"], "/ds/a/b/x", ["s/x"], id="deepest_root_wins"),
    pytest.param(["/"], "/ds/a/x", ["s/ds/a/x"], id="whole_tree"),
]


@pytest.mark.parametrize(("roots", "path", "seen"), HOSTILE_EXAMPLES)
def test_isolation_hostile_examples(roots: list[str], path: str, seen: list[str]) -> None:
    ws = WsDef("w0", "s", tuple(roots))
    claims = {"name": "alice", "profile": "standard", "workspaces": [ws.claim("r")]}
    hub = make_hub()
    [session] = subscribe_all(hub, [(claims, (ws,))])
    for topic in TREE_TOPICS:
        hub.fan_out(topic, route(topic, {"Target": {"Uuid": "n", "Path": path}}, hub.covering))
        assert [payload(f)["Target"]["Path"] for f in pending_frames(session)] == seen
    assert check_scenario(
        ([ws], [(claims, (ws,))], [(TREE_TOPIC, {"Target": {"Uuid": "n", "Path": path}})])
    ) == len(seen)


def test_isolation_generators_reach_deliveries() -> None:
    """Guard against a vacuous property: the generated cases deliver, and to several workspaces."""
    pool = [WsDef("w0", "s1", ("/ds/a",)), WsDef("w1", "s2", ("ds//ab/",)), WsDef("w2", "s1", ("/ds",))]
    claims = {"name": "alice", "profile": "standard", "workspaces": [ws.claim("r") for ws in pool]}
    moved = {"Type": "UPDATE_PATH", "Source": {"Uuid": "n", "Path": "/ds/a/x"},
             "Target": {"Uuid": "n", "Path": "ds/ab//x/"}}  # fmt: skip
    assert check_scenario((pool, [(claims, tuple(pool))], [(TREE_TOPIC, moved)])) == 3


# ---------------------------------------------------------------------------------------------
# Chat room access: check_room over generated identities and rooms


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (check_room with an in-memory node check)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("check_room suspended")


class NodeTable:
    """A node check that allows exactly the (sub, node) pairs given, or refuses to answer."""

    def __init__(self, allowed: set[tuple[str, str]], unavailable: set[str]) -> None:
        self.allowed_pairs = allowed
        self.unavailable = unavailable
        self.asked: list[tuple[str, str, str]] = []

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        self.asked.append((identity.sub, token, node_uuid))
        if node_uuid in self.unavailable:
            raise ProtocolError(ErrorCode.NODE_CHECK_UNAVAILABLE, "platform down")
        return (identity.sub, node_uuid) in self.allowed_pairs


LOGINS = ["alice", "bob", "Alice", "alice\u200b", '["alice","bob"]', 'a","b', "b,c", NFC_CAFE, NFD_CAFE, ""]
OBJECTS = ["w0", "w1", "W0", "w0 ", "w\u2215", "n-1", "n-2", "", "alice", "bob", "lobby"]


CHAT_MEMBERSHIPS = st.lists(
    st.tuples(st.sampled_from(["w0", "w1", "w2"]), st.sampled_from(["r", "w", "rw"])),
    max_size=3,
    unique_by=lambda pair: pair[0],
)
CHAT_PERSONAS = st.sampled_from(list(itertools.product([x for x in LOGINS if x], ["s-1", "s-2"], PROFILES)))
ROOMS = st.builds(
    RoomRef,
    uuid=st.sampled_from([None, "r-1"]),
    type=st.sampled_from([GLOBAL, WORKSPACE, USER, NODE, ANY]),
    type_object=st.sampled_from(OBJECTS + LOGINS),
    label=st.just(""),
)
NODE_GRANTS = st.sets(st.tuples(st.sampled_from(["s-1", "s-2"]), st.sampled_from(["n-1", "n-2", ""])))
NODE_OUTAGES = st.sets(st.sampled_from(["n-2"]))


@st.composite
def chat_cases(draw: st.DrawFn) -> tuple[Json, RoomRef, NodeTable]:
    user, sub, profile = draw(CHAT_PERSONAS)
    workspaces = [
        {"uuid": uuid, "slug": f"s{i}", "roots": [f"/ds/{i}"], "permissions": permissions}
        for i, (uuid, permissions) in enumerate(draw(CHAT_MEMBERSHIPS))
    ]
    claims = {"name": user, "sub": sub, "profile": profile, "workspaces": workspaces}
    return claims, draw(ROOMS), NodeTable(draw(NODE_GRANTS), draw(NODE_OUTAGES))


@given(chat_cases())
@deterministic(1500)
def test_chat_access_rules(case: tuple[Json, RoomRef, NodeTable]) -> None:
    claims, room, nodes = case
    identity = identity_from_claims(claims)
    try:
        grant: Grant | None = run_now(check_room(identity, "tok", room, nodes))
        refusal = None
    except ProtocolError as err:
        grant, refusal = None, err.code
    member = {ws["uuid"]: ws["permissions"] for ws in claims["workspaces"]}
    if room.type == GLOBAL:
        standard = claims["profile"] in ("standard", "admin")
        assert (grant is not None) == standard and refusal in (None, ErrorCode.ROOM_FORBIDDEN)
    elif room.type == WORKSPACE:
        if room.type_object in member:  # exact uuid only: no case, space or look-alike matching
            assert grant == Grant(WORKSPACE, room.type_object)
        else:
            assert refusal == ErrorCode.ROOM_FORBIDDEN
    elif room.type == USER:
        assert grant is not None and grant.type == USER
        assert grant.type_object == user_room_key(claims["name"], room.type_object)
        assert user_room_peer(grant.type_object, claims["name"]) == room.type_object
    elif room.type == NODE:
        if room.type_object in nodes.unavailable:
            assert refusal == ErrorCode.NODE_CHECK_UNAVAILABLE
        elif (claims["sub"], room.type_object) in nodes.allowed_pairs:
            assert grant == Grant(NODE, room.type_object)
        else:
            assert refusal == ErrorCode.ROOM_FORBIDDEN
        assert nodes.asked == [(claims["sub"], "tok", room.type_object)]  # the user's own token
    else:
        assert refusal == ErrorCode.UNKNOWN_ROOM_TYPE
    if room.type != NODE:
        assert nodes.asked == []


@given(st.tuples(*[st.sampled_from(LOGINS)] * 4))
@deterministic(500)
def test_chat_user_room_key_is_the_pair(logins: tuple[str, str, str, str]) -> None:
    """Whichever of two users opens it, the room is the same; no other pair shares its key."""
    a, b, c, d = logins
    assert user_room_key(a, b) == user_room_key(b, a)
    assert (user_room_key(a, b) == user_room_key(c, d)) == (sorted([a, b]) == sorted([c, d]))
    assert user_room_peer(user_room_key(a, b), a) == b
    assert user_room_peer(user_room_key(a, b), b) == a


@pytest.mark.parametrize("profile", PROFILES)
def test_chat_access_node_rooms_disabled_by_default(profile: str) -> None:
    from gateway.chat.access import NodeRoomsDisabled

    identity = identity_from_claims({"name": "alice", "profile": profile})
    with pytest.raises(ProtocolError) as info:
        run_now(check_room(identity, "tok", RoomRef(None, NODE, "n-1", ""), NodeRoomsDisabled()))
    assert info.value.code == ErrorCode.NODE_ROOMS_DISABLED

"""Who a session is and what it may see. Pure: the resolvers produce these, everyone else reads them.

An :class:`Identity` carries the user, their profile and roles (in the platform's order), and the
workspaces they may see. A :class:`Workspace` holds everything routing needs to decide whether a
node path is visible in it and how the browser names it: its roots (internal node paths, as bus
events spell them), the key Cells prefixes to paths of a workspace with several roots, and the
sub-folder access rules that hide parts of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.paths import is_within

PROFILES: Final = ("anon", "shared", "standard", "admin")
SYSTEM_USER: Final = "pydio.system.user"
PERMISSIONS: Final = frozenset({"r", "w", "rw"})


@dataclass(frozen=True, slots=True)
class FolderRule:
    """An access rule on a folder inside (or above) a workspace root, from the platform's ACLs.

    ``deny``: the folder and everything below it are hidden, whatever else applies. Otherwise the
    deepest rule above a node decides: ``read`` False hides it (a folder the user may write to but
    not read), True shows it.
    """

    path: str
    deny: bool = False
    read: bool = True


@dataclass(frozen=True, slots=True)
class Workspace:
    """A workspace as one session sees it; ``roots`` are normalised internal node paths."""

    uuid: str
    slug: str
    roots: tuple[str, ...]
    permissions: str = "r"
    # For a workspace of several roots, the path segment the platform puts before each root's
    # content (same order as ``roots``); empty when paths are just ``<slug>/<below root>``.
    root_keys: tuple[str, ...] = ()
    folder_rules: tuple[FolderRule, ...] = ()

    def root_key(self, root: str) -> str:
        """The path segment for ``root``'s content ('' for a workspace of one root)."""
        if not self.root_keys:
            return ""
        return self.root_keys[self.roots.index(root)]

    def can_read(self, path: str) -> bool:
        """True unless a folder rule hides ``path`` (a deny above it, or a deepest rule without read)."""
        deepest: FolderRule | None = None
        for rule in self.folder_rules:
            if not is_within(path, rule.path):
                continue
            if rule.deny:
                return False
            if deepest is None or len(rule.path) > len(deepest.path):
                deepest = rule
        return deepest is None or deepest.read


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated user behind a session."""

    user: str
    sub: str
    profile: str = "standard"
    roles: tuple[str, ...] = ()
    workspaces: tuple[Workspace, ...] = ()
    expires_at: float | None = None  # when the session must end (None: never for this reason)
    email: str | None = None
    display_name: str | None = None
    group_path: str | None = None
    policy_subjects: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_subjects", _policy_subjects(self))

    @property
    def is_admin(self) -> bool:
        return self.profile == "admin"

    def has_profile(self, minimum: str) -> bool:
        """True when the session's profile is ``minimum`` or above (anon < shared < standard < admin)."""
        return PROFILES.index(self.profile) >= PROFILES.index(minimum)

    def workspace(self, uuid: str) -> Workspace | None:
        return next((ws for ws in self.workspaces if ws.uuid == uuid), None)


def _policy_subjects(identity: Identity) -> frozenset[str]:
    """Subjects a resource policy may name to grant this user access, as the platform builds them.

    Profiles are cumulative: an admin also matches ``profile:standard`` and below.
    """
    subjects = {"*", f"user:{identity.user}"}
    rank = PROFILES.index(identity.profile)
    subjects.update(f"profile:{p}" for p in PROFILES[: rank + 1])
    subjects.update(f"role:{r}" for r in identity.roles)
    return frozenset(subjects)

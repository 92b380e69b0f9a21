"""Node-path arithmetic shared by identity (workspace roots) and routing (event paths). Pure.

A normalised path has no leading or trailing slash and no empty segment: ``/ds/common/`` and
``ds//common`` both become ``ds/common``; the empty string is the root of the whole tree. Paths
with ``.`` or ``..`` segments or control characters are *invalid*: the router never delivers them
(failing closed instead of guessing what a hostile path resolves to).
"""

from __future__ import annotations

from collections.abc import Iterator


def normalize(path: str) -> str | None:
    """Return the normalised form of ``path``, or None if it is invalid."""
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in path):  # C0, DEL and C1 controls
        return None
    segments = [s for s in path.split("/") if s]
    if any(s in {".", ".."} for s in segments):
        return None
    return "/".join(segments)


def ancestors_and_self(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a/b/c``, ``a/b``, ``a``, ``""`` (deepest first)."""
    while path:
        yield path
        cut = path.rfind("/")
        path = path[:cut] if cut >= 0 else ""
    yield ""


def is_within(path: str, root: str) -> bool:
    """True when ``path`` equals ``root`` or lies below it (``ds/ab`` is not within ``ds/a``)."""
    return root == "" or path == root or path.startswith(root + "/")


def relative_to(path: str, root: str) -> str:
    """The part of ``path`` below ``root`` (empty when they are equal). Requires is_within."""
    if root == "":
        return path
    return path[len(root) + 1 :]


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def has_hidden_segment(relative: str) -> bool:
    """True when a segment below the workspace root starts with '.' (``.pydio`` included).

    The platform hides such names in every listing, so a node inside a hidden folder is as
    invisible as the folder itself.
    """
    return any(segment.startswith(".") for segment in relative.split("/") if segment)


def basename(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped[stripped.rfind("/") + 1 :]

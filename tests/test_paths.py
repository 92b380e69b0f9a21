"""Node-path arithmetic (gateway.paths): normalisation, ancestry, containment, hidden names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import paths


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ds/common", "ds/common"),
        ("/ds/common", "ds/common"),
        ("/ds/common/", "ds/common"),
        ("ds//common", "ds/common"),
        ("//ds///common//report.txt", "ds/common/report.txt"),
        ("", ""),
        ("/", ""),
        ("///", ""),
        (".hidden/x", ".hidden/x"),  # hidden is not invalid: routing decides visibility
        ("a/..x/b", "a/..x/b"),
        ("a/.../b", "a/.../b"),
        ("a/b.", "a/b."),
        ("ds/été/ rapport .txt", "ds/été/ rapport .txt"),
        ("ds/./x", None),
        ("ds/../x", None),
        ("/ds/common/..", None),
        (".", None),
        ("..", None),
        ("./", None),
        ("ds/a\x00b", None),
        ("ds/a\nb", None),
        ("ds/a\tb", None),
        ("ds/a\x1fb", None),
        ("ds/a\x7fb", None),
        ("ds/a\x85b", None),  # C1 control (NEL)
        ("ds/a\x9fb", None),
    ],
)
def test_paths_normalize(raw: str, expected: str | None) -> None:
    assert paths.normalize(raw) == expected


@given(st.text(alphabet="ab./\x00 ", max_size=12))
@settings(max_examples=200, deadline=None)
def test_paths_normalize_idempotent(raw: str) -> None:
    normal = paths.normalize(raw)
    if normal is not None:
        assert paths.normalize(normal) == normal
        assert not normal.startswith("/")
        assert not normal.endswith("/")
        assert "//" not in normal


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b/c", ["a/b/c", "a/b", "a", ""]),
        ("a", ["a", ""]),
        ("", [""]),
        ("ds/.h/x", ["ds/.h/x", "ds/.h", "ds", ""]),
    ],
)
def test_paths_ancestors_and_self(path: str, expected: list[str]) -> None:
    assert list(paths.ancestors_and_self(path)) == expected


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("ds/a", "ds/a", True),
        ("ds/a/x", "ds/a", True),
        ("ds/a/x/y", "ds/a", True),
        ("ds/ab", "ds/a", False),
        ("ds/ab/x", "ds/a", False),
        ("ds/a", "ds/ab", False),
        ("ds", "ds/a", False),
        ("ds/a", "", True),
        ("", "", True),
        ("", "ds", False),
        ("dsx/a", "ds", False),
    ],
)
def test_paths_is_within(path: str, root: str, expected: bool) -> None:
    assert paths.is_within(path, root) is expected


@given(
    st.lists(st.sampled_from(["a", "ab", "b"]), max_size=4),
    st.lists(st.sampled_from(["a", "ab", "b"]), max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_paths_is_within_matches_ancestry(path_parts: list[str], root_parts: list[str]) -> None:
    path, root = "/".join(path_parts), "/".join(root_parts)
    assert paths.is_within(path, root) == (root in paths.ancestors_and_self(path))
    if paths.is_within(path, root):
        assert paths.join(root, paths.relative_to(path, root)) == path


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("ds/a/x/y", "ds/a", "x/y"),
        ("ds/a/x", "ds/a", "x"),
        ("ds/a", "ds/a", ""),
        ("ds/a", "", "ds/a"),
        ("", "", ""),
    ],
)
def test_paths_relative_to(path: str, root: str, expected: str) -> None:
    assert paths.relative_to(path, root) == expected


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("", False),
        ("report.txt", False),
        ("a/b/c", False),
        ("a.b/c.d", False),
        ("a/b.", False),
        (".pydio", True),
        ("folder/.pydio", True),
        (".DS_Store", True),
        (".hidden/x", True),
        ("a/.git/config", True),
        ("..x", True),
    ],
)
def test_paths_has_hidden_segment(relative: str, expected: bool) -> None:
    assert paths.has_hidden_segment(relative) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ds/common/report.txt", "report.txt"),
        ("ds/common/report.txt", "report.txt"),
        ("report.txt", "report.txt"),
        ("/ds/common/folder/", "folder"),
        ("", ""),
        ("/", ""),
    ],
)
def test_paths_basename(path: str, expected: str) -> None:
    assert paths.basename(path) == expected


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("slug", "a/b"), "slug/a/b"),
        (("slug", ""), "slug"),
        (("", "a"), "a"),
    ],
)
def test_paths_join(parts: tuple[str, ...], expected: str) -> None:
    assert paths.join(*parts) == expected

"""Locations as pure logic: the Plan from two snapshots, its listing, config and PATH matching."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import ConfigError, UsageError
from tether.locations.config import BACKUP, WORKING, parse, resolve_path
from tether.locations.plan import Action, Entry, Op, Plan, diff, display, paths, render, summary

F1 = Entry("file", 10, 1_000)
F2 = Entry("file", 10, 2_000)  # same size, newer
F3 = Entry("file", 11, 1_000)  # other size
D1 = Entry("dir", 0, 5, 0o755)
L1 = Entry("link", target=b"x")
L2 = Entry("link", target=b"y")


def ops(actions: tuple[Action, ...]) -> list[tuple[str, bytes]]:
    return [(a.op.value, a.rel) for a in actions]


def plan(actions: tuple[Action, ...]) -> Plan:
    return Plan("work", "s", "/src", "/dst", actions)


def test_quick_check_like_rsync() -> None:
    src = {b"same": F1, b"mtime": F2, b"size": F3, b"new": F1, b"link": L2}
    dst = {b"same": F1, b"mtime": F1, b"size": F1, b"link": L1, b"gone": F1}
    assert ops(diff(src, dst, delete=False)) == [
        ("modified", b"link"), ("modified", b"mtime"), ("new", b"new"), ("modified", b"size"),
    ]  # fmt: skip
    assert ("delete", b"gone") in ops(diff(src, dst, delete=True))


def test_folders_parents_first_and_attribute_changes() -> None:
    src = {b"d": D1, b"d/f": F1, b"e": D1}
    dst = {b"e": Entry("dir", 0, 6, 0o755)}
    assert ops(diff(src, dst, delete=True)) == [("new", b"d"), ("new", b"d/f"), ("changed", b"e")]
    assert ops(diff(src, {b"e": D1}, delete=True)) == [("new", b"d"), ("new", b"d/f")]


def test_a_file_replacing_a_folder_takes_its_content_along() -> None:
    src = {b"x": F1}
    dst = {b"x": D1, b"x/a": F1, b"x/b": F1}
    actions = diff(src, dst, delete=True)
    assert ops(actions) == [("modified", b"x")]  # one question, one move aside
    assert "  modified  x (a folder and all it holds replaced by a file)" in "\n".join(render(plan(actions)))


def test_declining_drops_what_lies_under_the_declined_entry() -> None:
    src = {b"x": D1, b"x/a": F1, b"y": F2}
    dst = {b"x": F1, b"y": F1, b"z": F1}
    p = plan(diff(src, dst, delete=True))
    assert ops(p.approved(overwrite=False, delete=True).actions) == [("delete", b"z")]
    assert ops(p.approved(overwrite=True, delete=False).actions) == [
        ("modified", b"x"), ("new", b"x/a"), ("modified", b"y"),
    ]  # fmt: skip


def test_tree_plans_missing_folders_only() -> None:
    src = {b"a": D1, b"a/f": F1, b"b": D1, b"c": D1, b"c/d": D1}
    dst = {b"b": Entry("dir", 0, 9, 0o700), b"zz": F1}
    assert ops(diff(src, dst, delete=True, dirs_only=True)) == [("new", b"a"), ("new", b"c"), ("new", b"c/d")]


def test_listing_escapes_names_and_s_hides_folder_changes_but_not_deletions() -> None:
    src = {b"new\nline": F1, b"caf\xe9": F1, b"d": D1, b"-rf": F1}
    dst = {b"old": D1, b"-rf": F2}
    p = plan(diff(src, dst, delete=True))
    full = render(p)
    assert full[0] == "work [s] /src -> /dst"
    assert "  new       new\\nline" in full and "  new       caf\\xe9" in full and "  new       d/" in full
    assert "  modified  -rf" in full
    short = render(p, show_dirs=False)
    assert "  new       d/" not in short and "  delete    old/" in short
    assert summary(p) == "new: 2 files, 1 folder; modified: 1 file; delete: 1 folder"
    assert summary(plan(())) == "nothing to do" and display(b"a\tb\x7f") == "a\\tb\\x7f"


def test_file_list_is_nul_separated_and_safe_from_comment_lines() -> None:
    actions = diff({b"#hash": F1, b"a\nb": F1, b";x": F1}, {}, delete=False)
    assert paths(actions) == b"./#hash\0./;x\0./a\nb\0"
    assert Op.UPDATE.value == "changed"


# hypothesis: applying a plan makes the two sides agree


entries = st.sampled_from([F1, F2, F3, L1, L2, Entry("dir", 0, 1, 0o755), Entry("dir", 0, 2, 0o700)])
snapshots = st.dictionaries(st.sampled_from([b"a", b"b", b"c\n", b"#d", b"\xff"]), entries, max_size=5)


@given(snapshots, snapshots)
def test_applied_plan_leaves_nothing_to_do(src: dict[bytes, Entry], dst: dict[bytes, Entry]) -> None:
    after = dict(dst)
    for a in diff(src, dst, delete=True):
        if a.op is Op.DELETE:
            del after[a.rel]
        else:
            after[a.rel] = src[a.rel]
    assert after == src
    assert diff(src, after, delete=True) == ()
    assert all(a.op is not Op.DELETE for a in diff(src, dst, delete=False))


# ---------------------------------------------------------------- config


def cfg(tmp_path: Path, text: str):
    f = tmp_path / "locations.toml"
    return parse(f, text)


def test_config_paths_relative_tilde_and_roles(tmp_path: Path) -> None:
    c = cfg(tmp_path, '[sets.p]\nworking = ["~/Pictures"]\nbackup = ["disk"]\nkeep_versions = 0\n')
    (s,) = c.sets
    assert s.working[0].path == os.path.expanduser("~/Pictures") and s.working[0].role == WORKING
    assert s.backup[0].path == str(tmp_path / "disk") and s.backup[0].role == BACKUP
    assert s.keep_versions == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[sets.a]\nworking = ["/w"]\nbackup = ["/b"]\n[sets.b]\nworking = ["/x"]\nbackup = ["/x/y"]\n',
         ":6: sets.b.backup: WORKING /x and BACKUP /x/y overlap"),
        ('[sets.a]\nworking = ["/w"]\nbackup = ["/w"]\n', ":3: sets.a.backup: WORKING /w and BACKUP /w overlap"),
        ('[sets.a]\nworking = ["/w"]\nbakup = ["/b"]\n', ":3: sets.a.bakup: unknown key 'bakup'"),
        ('[sets.a]\nworking = ["/w"]\n', ":1: sets.a: missing key 'backup'"),
        ('[sets.a]\nworking = "/w"\nbackup = ["/b"]\n', ":2: sets.a.working: must be a non-empty list"),
        ('[sets.a]\nworking = ["/w"]\nbackup = ["/b"]\nkeep_versions = -1\n', ":4: sets.a.keep_versions: must be"),
        ('set = 1\n', ":1: set: unknown key 'set'"),
        ('[sets.a\n', ":1: invalid TOML"),
    ],
)  # fmt: skip
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, text)
    assert str(e.value).startswith(str(tmp_path / "locations.toml") + expected)
    assert e.value.code == 2


def test_config_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, '[sets.a]\nworking = ["/w"]\nbackup = ["/b"]\nkeep_version = 3\n')
    assert e.value.hint is not None and "did you mean 'keep_versions'?" in e.value.hint


# ---------------------------------------------------------------- PATH matching


def test_paths_match_the_longest_location_and_map_relative(tmp_path: Path) -> None:
    w, b = tmp_path / "w", tmp_path / "w2"
    (w / "inner").mkdir(parents=True)
    c = cfg(
        tmp_path,
        f'[sets.a]\nworking = ["{w}"]\nbackup = ["{b}"]\n[sets.b]\nworking = ["{w}/inner"]\nbackup = ["/bb"]\n',
    )
    t = resolve_path(c, str(w / "inner" / "x"))
    assert (t.location.set_name, t.rel) == ("b", b"x")
    t = resolve_path(c, str(b / "sub dir" / "f"))  # need not exist: the action decides where it must
    assert (t.location.role, t.rel) == (BACKUP, b"sub dir/f")
    assert resolve_path(c, str(w)).rel == b""
    with pytest.raises(UsageError, match=r"is not inside any location \(configured sets: a, b\)"):
        resolve_path(c, str(tmp_path / "w3"))
    with pytest.raises(UsageError, match="inside tether's own folder"):
        resolve_path(c, str(w / ".tether" / "backups"))


def test_a_symlinked_path_is_not_followed_but_its_parent_is(tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (w / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "alias").symlink_to(w)
    c = cfg(tmp_path, f'[sets.a]\nworking = ["{w}"]\nbackup = ["/b"]\n')
    assert resolve_path(c, str(w / "link")).rel == b"link"
    assert resolve_path(c, str(tmp_path / "alias" / "f")).rel == b"f"

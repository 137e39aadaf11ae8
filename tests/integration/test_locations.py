"""Locations end to end: real rsync, real pseudo-terminal prompts (pexpect), exact trees.

Each test builds a small WORKING and BACKUP trees, writes locations.toml into its own
TETHER_HOME, and answers the questions tether asks on the terminal, yes or no.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pexpect
import pytest

from tests.rig.compare import assert_same_tree, diff_trees
from tests.rig.kept import kept
from tests.rig.trees import make_tree

TETHER = [sys.executable, "-m", "tether"]


def run(args: Sequence[str | Path], env: dict[str, str], rc: int | None = None) -> subprocess.CompletedProcess[str]:
    """No terminal at all (stdin is /dev/null), as under cron or CI."""
    proc = subprocess.run(
        [*TETHER, *map(str, args)], env=env, capture_output=True, text=True, errors="backslashreplace",
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if rc is not None:
        assert proc.returncode == rc, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


class Term:
    """tether on a real pseudo-terminal; `said` holds everything it printed."""

    def __init__(self, args: Sequence[str | Path], env: dict[str, str]) -> None:
        self.log = io.StringIO()
        self.child = pexpect.spawn(
            TETHER[0], [*TETHER[1:], *map(str, args)], env=env, encoding="utf-8",
            codec_errors="backslashreplace", timeout=60, dimensions=(60, 400),
        )  # fmt: skip
        self.child.logfile_read = self.log

    def answer(self, question: str, reply: str) -> None:
        self.child.expect_exact(question)
        self.child.sendline(reply)

    def end(self, rc: int = 0) -> str:
        self.child.expect(pexpect.EOF)
        self.child.close()
        said = self.log.getvalue()
        assert "Traceback" not in said, said
        assert self.child.exitstatus == rc, said
        return said

    @property
    def said(self) -> str:
        return self.log.getvalue()


@pytest.fixture
def sets(tmp_path: Path, tether_env: dict[str, str], tether_home: Path) -> dict[str, Path]:
    """WORKING w (a small tree) and BACKUPs b1, b2 holding a copy of it, plus an unmounted one."""
    w, b1, b2 = tmp_path / "w", tmp_path / "b1", tmp_path / "b2"
    make_tree(w, 12, seed=5, hostile=False)
    shutil.copytree(w, b1, symlinks=True)
    shutil.copytree(w, b2, symlinks=True)
    write_config(tether_home, f'[sets.photos]\nworking = ["{w}"]\nbackup = ["{b1}", "{b2}", "{tmp_path}/usb"]\n')
    return {"w": w, "b1": b1, "b2": b2, "tmp": tmp_path}


def write_config(home: Path, text: str) -> Path:
    (home / "config").mkdir(parents=True, exist_ok=True)
    f = home / "config" / "locations.toml"
    f.write_text(text)
    return f


def edit(p: Path, text: str, mtime: int = 1_700_000_000) -> None:
    """New bytes and a known new mtime: a modified file by rsync's quick check."""
    p.write_text(text)
    os.utime(p, (mtime, mtime))


def first_file(root: Path) -> Path:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and ".tether" not in p.parts)[0]


# ---------------------------------------------------------------- backup


@pytest.mark.parametrize("answers", [("y", "n"), ("n", "y")])
def test_backup_copies_new_files_and_asks_per_backup_before_overwriting(sets, tether_env, answers) -> None:
    w, b1, b2 = sets["w"], sets["b1"], sets["b2"]
    old = first_file(w)
    rel = old.relative_to(w)
    before = old.read_bytes()
    edit(old, "changed in WORKING")
    (w / "brand new.txt").write_text("new")
    t = Term(["backup", w], tether_env)
    t.answer(f"overwrite these 1 modified files in {b1}? [y/N]", answers[0])
    t.answer(f"overwrite these 1 modified files in {b2}? [y/N]", answers[1])
    said = t.end(0)
    assert "new       brand new.txt" in said and f"modified  {rel}" in said
    assert f"BACKUP {sets['tmp']}/usb of set photos is not accessible" in said
    for b, yes in zip((b1, b2), answers, strict=True):
        assert (b / "brand new.txt").read_text() == "new"
        if yes == "y":
            assert_same_tree(w, b)
            assert [p.read_bytes() for p in kept(b, str(rel), "replaced")] == [before]  # nothing lost
        else:
            assert (b / rel).read_bytes() == before
            assert all(repr(os.fsencode(rel)) in d for d in diff_trees(w, b)), diff_trees(w, b)


def test_backup_m_overwrites_without_asking_and_ignores_d(sets, tether_env) -> None:
    w, b1, b2 = sets["w"], sets["b1"], sets["b2"]
    edit(first_file(w), "changed")
    (b1 / "only in backup").write_text("stays")
    t = Term(["backup", "-m", "-D", w], tether_env)
    said = t.end(0)
    assert "backup never deletes anything: -d/-D ignored" in said
    assert "[y/N]" not in said
    assert (b1 / "only in backup").read_text() == "stays"
    (b1 / "only in backup").unlink()
    assert_same_tree(w, b1)
    assert_same_tree(w, b2)


def test_backup_path_given_in_a_backup_maps_back_to_the_working(sets, tether_env) -> None:
    w, b1, b2 = sets["w"], sets["b1"], sets["b2"]
    (w / "sub").mkdir()
    (w / "sub" / "f.txt").write_text("from working")
    (w / "outside.txt").write_text("not part of the PATH")
    (b1 / "sub").mkdir()  # the PATH exists in b1 only as an empty folder
    run(["backup", b1 / "sub"], tether_env, rc=0)
    for b in (b1, b2):
        assert (b / "sub" / "f.txt").read_text() == "from working"
        assert not (b / "outside.txt").exists()
    assert (w / "sub").stat().st_mtime_ns == (b2 / "sub").stat().st_mtime_ns


def test_backup_asks_which_working_when_several(sets, tether_env, tether_home) -> None:
    w, b1, tmp = sets["w"], sets["b1"], sets["tmp"]
    w2 = tmp / "w2"
    w2.mkdir()
    (w2 / "x.txt").write_text("from w2")
    write_config(tether_home, f'[sets.photos]\nworking = ["{w}", "{w2}"]\nbackup = ["{b1}"]\n')
    t = Term(["backup", b1], tether_env)
    t.answer("which WORKING?", "")
    t.answer("choose 1-2 (q to stop): ", "2")
    t.end(0)
    assert (b1 / "x.txt").read_text() == "from w2"
    t = Term(["backup", b1], tether_env)
    t.answer("choose 1-2 (q to stop): ", "q")
    assert "stopped" in t.end(1)


def test_a_name_with_a_newline_is_listed_on_one_line_and_copied(tmp_path, tether_env, tether_home) -> None:
    w, b = tmp_path / "w", tmp_path / "b"
    make_tree(w, 5, seed=2, hostile=True)  # newlines, leading '-', quotes, non-UTF-8 names
    b.mkdir()
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\n')
    proc = run(["backup", w], tether_env, rc=0)
    assert "  new       new\\nline\n" in proc.stdout
    assert "  new       -rf\n" in proc.stdout and "caf\\xe9" in proc.stdout
    assert_same_tree(w, b)
    os.utime(w / "new\nline", ns=(1, 1))
    os.utime(b / "new\nline", ns=(2, 2))
    t = Term(["backup", w / "new\nline"], tether_env)
    t.answer("overwrite these 1 modified files", "y")
    assert "modified  new\\nline" in t.end(0)
    assert_same_tree(w, b)
    (saved,) = kept(b, "new\nline")
    assert saved.stat().st_mtime_ns == 2


def test_a_file_deleted_since_the_plan_is_a_note_not_a_failure(tmp_path, tether_env, tether_home) -> None:
    """rsync says 24 (vanished) for it: the backup of everything else is done, as a mirror says."""
    w, b = tmp_path / "w", tmp_path / "b"
    w.mkdir()
    b.mkdir()
    (w / "stays.txt").write_text("stays\n")
    (w / "goes.txt").write_text("goes\n")
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\n')
    real = shutil.which("rsync")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text(f'#!/bin/sh\nrm -f -- "$GOES"\nexec {real} "$@"\n')  # after the plan
    (bin_dir / "rsync").chmod(0o755)
    env = tether_env | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GOES": str(w / "goes.txt")}
    proc = run(["backup", w], env, rc=0)
    assert "1 copied" in proc.stdout, proc
    assert "goes.txt" in proc.stderr and "nothing to copy" in proc.stderr
    assert (b / "stays.txt").read_text() == "stays\n" and not (b / "goes.txt").exists()


# ---------------------------------------------------------------- work, transfer, tree


@pytest.mark.parametrize(("overwrite", "delete"), [("y", "y"), ("n", "n"), ("y", "n"), ("n", "y")])
def test_work_asks_which_backup_then_before_overwriting_and_deleting(sets, tether_env, overwrite, delete) -> None:
    w, b2 = sets["w"], sets["b2"]
    mod = first_file(b2)
    rel = mod.relative_to(b2)
    before = (w / rel).read_bytes()
    edit(mod, "newer in BACKUP")
    (w / "scratch.txt").write_text("only in WORKING")
    (b2 / "fresh.txt").write_text("fresh")
    t = Term(["work", "-d", w], tether_env)
    t.answer("which BACKUP?", "")
    t.answer("choose 1-2 (q to stop): ", "2")
    t.answer(f"overwrite these 1 modified files in {w}? [y/N]", overwrite)
    t.answer(f"delete these 1 files in {w}? [y/N]", delete)
    said = t.end(0)
    assert "delete    scratch.txt" in said and "new       fresh.txt" in said
    assert (w / "fresh.txt").read_text() == "fresh"
    assert (w / rel).read_bytes() == (b"newer in BACKUP" if overwrite == "y" else before)
    assert (w / "scratch.txt").exists() == (delete == "n")
    if overwrite == delete == "y":
        assert_same_tree(b2, w)
    assert len(kept(w, str(rel), "replaced")) == (1 if overwrite == "y" else 0)
    assert [p.read_text() for p in kept(w, "scratch.txt", "deleted")] == (["only in WORKING"] if delete == "y" else [])


def test_work_without_d_lists_no_deletions_and_capital_d_deletes_without_asking(sets, tether_env) -> None:
    w, b1 = sets["w"], sets["b1"]
    (w / "scratch.txt").write_text("only in WORKING")
    shutil.rmtree(sets["b2"])  # a single accessible BACKUP: no choice to make
    said = Term(["work", w], tether_env).end(0)
    assert "scratch" not in said and "nothing to do" in said
    said = Term(["work", "-d", "-D", w], tether_env).end(0)
    assert "delete    scratch.txt" in said and "[y/N]" not in said
    assert_same_tree(b1, w)
    assert [p.read_text() for p in kept(w, "scratch.txt", "deleted")] == ["only in WORKING"]


@pytest.mark.parametrize("reply", ["y", "n"])
def test_transfer_between_chosen_backups(sets, tether_env, reply) -> None:
    b1, b2 = sets["b1"], sets["b2"]
    mod = first_file(b1)
    rel = mod.relative_to(b1)
    before = (b2 / rel).read_bytes()
    edit(mod, "fixed on b1")
    (b1 / "extra").mkdir()
    (b2 / "stale.txt").write_text("stale")
    t = Term(["transfer", "-d", sets["w"]], tether_env)
    t.answer("which BACKUP?", "")
    t.answer("choose 1-2 (q to stop): ", "1")
    # the destination needs no question: b2 is the only other accessible BACKUP
    t.answer(f"overwrite these 1 modified files in {b2}? [y/N]", reply)
    t.answer(f"delete these 1 files in {b2}? [y/N]", reply)
    t.end(0)
    assert (b2 / "extra").is_dir()
    if reply == "y":
        assert_same_tree(b1, b2)
    else:
        assert (b2 / rel).read_bytes() == before and (b2 / "stale.txt").exists()


def test_tree_creates_the_folder_skeleton_only(tmp_path, tether_env, tether_home) -> None:
    w, b = tmp_path / "w", tmp_path / "b"
    make_tree(b, 40, seed=4, hostile=False, symlinks=False)
    (w / "d0000").mkdir(parents=True)
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\n')
    said = Term(["tree", w], tether_env).end(0)
    dirs_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_dir())
    dirs_w = sorted(p.relative_to(w) for p in w.rglob("*") if p.is_dir() and ".tether" not in p.parts)
    assert dirs_w == dirs_b
    assert not [p for p in w.rglob("*") if not p.is_dir()]
    assert "new       d0000/" not in said and "new       empty/e0/nested-empty/" in said
    assert (w / "empty" / "e1").stat().st_mtime_ns == (b / "empty" / "e1").stat().st_mtime_ns
    assert "nothing to do" in Term(["tree", w], tether_env).end(0)


# ---------------------------------------------------------------- options


def test_s_hides_folder_changes_from_the_listing(sets, tether_env) -> None:
    w = sets["w"]
    (w / "newdir").mkdir()
    (w / "newdir" / "f").write_text("f")
    said = Term(["backup", "-s", w], tether_env).end(0)
    assert "new       newdir/f" in said and "newdir/\r\n" not in said
    assert "new: 2 files, 2 folders" not in said and "1 folder" in said  # counted, not listed
    assert_same_tree(w, sets["b1"])


@pytest.mark.parametrize("reply", ["y", "n"])
def test_v_shows_the_rsync_command_and_asks_first(sets, tether_env, reply) -> None:
    w, b1 = sets["w"], sets["b1"]
    (w / "n.txt").write_text("n")
    t = Term(["backup", "-v", w], tether_env)
    t.answer("run these commands? [y/N]", reply)
    said = t.end(0 if reply == "y" else 1)
    assert f"+ rsync -a --ignore-times --files-from=- --from0 --backup --backup-dir={b1}/.tether/incoming/" in said
    assert f"-- {w}/ {b1}/  < 1 paths on stdin" in said
    assert (b1 / "n.txt").exists() == (reply == "y")


def test_dry_run_lists_and_asks_nothing(sets, tether_env) -> None:
    w, b1 = sets["w"], sets["b1"]
    before = sets["tmp"] / "before"
    shutil.copytree(b1, before, symlinks=True)
    edit(first_file(w), "changed")
    (w / "n.txt").write_text("n")
    said = Term(["work", "--dry-run", "-d", "--from", b1, b1], tether_env).end(0)
    said += Term(["backup", "--dry-run", w], tether_env).end(0)
    assert "[y/N]" not in said and "dry run: nothing changed" in said and "new       n.txt" in said
    assert_same_tree(before, b1)
    assert not (w / ".tether").exists()


def test_yes_answers_yes_but_never_picks_a_location(sets, tether_env) -> None:
    w, b1, b2 = sets["w"], sets["b1"], sets["b2"]
    (w / "scratch").write_text("x")
    proc = run(["work", "--yes", "-d", w], tether_env, rc=2)
    assert (
        "--yes does not pick a location" in proc.stderr
        and f"add --from LOCATION with one of: {b1}, {b2}" in proc.stderr
    )
    said = Term(["work", "--yes", "-d", "--from", b2, w], tether_env).end(0)
    assert "[y/N]" not in said
    assert_same_tree(b2, w)


# ---------------------------------------------------------------- no terminal


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["backup"], "-m"),
        (["work", "-m", "-d", "--from", "B1"], "-D"),
        (["work"], "--from"),
        (["backup", "-v", "-m"], "--yes"),
    ],
)
def test_without_a_terminal_tether_stops_before_any_change_and_names_the_flag(sets, tether_env, args, flag) -> None:
    w, b1 = sets["w"], sets["b1"]
    (b1 / "only in b1").write_text("x")
    edit(first_file(w), "changed")
    (w / "n.txt").write_text("n")
    snap = sets["tmp"] / "snap"
    shutil.copytree(sets["tmp"], snap, symlinks=True)
    args = [str(b1) if a == "B1" else a for a in args]
    proc = run([*args, w], tether_env, rc=2)
    assert "there is no terminal" in proc.stderr or "without a terminal" in proc.stderr
    assert f"add {flag}" in proc.stderr
    for name in ("w", "b1", "b2"):
        assert_same_tree(snap / name, sets[name], ignore_top=())


# ---------------------------------------------------------------- nothing lost, re-plan


def test_replaced_and_deleted_files_are_kept_as_versions_pruned_to_keep_versions(
    tmp_path, tether_env, tether_home
) -> None:
    w, b = tmp_path / "w", tmp_path / "b"
    w.mkdir()
    b.mkdir()
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\nkeep_versions = 2\n')
    for i in range(4):
        edit(b / "f.txt", f"version {i}", mtime=1_600_000_000 + i)
        run(["work", "-m", "--from", b, w], tether_env, rc=0)
    assert [p.read_text() for p in kept(w, "f.txt", "replaced")] == ["version 1", "version 2"]  # the two newest
    (w / "scratch.txt").write_text("made in WORKING")
    run(["work", "-D", "--from", b, w], tether_env, rc=0)
    assert not (w / "scratch.txt").exists()
    assert [p.read_text() for p in kept(w, "scratch.txt", "deleted")] == ["made in WORKING"]
    assert len(kept(w)) == 3 and not list((w / ".tether" / "incoming").iterdir())
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{b}"]\nkeep_versions = 0\n')
    shutil.rmtree(w / ".tether")
    edit(b / "f.txt", "last", mtime=1_600_000_100)
    run(["work", "-m", "--from", b, w], tether_env, rc=0)
    assert (w / "f.txt").read_text() == "last" and not (w / ".tether").exists()


def test_a_file_changed_between_listing_and_answer_is_planned_and_asked_again(sets, tether_env) -> None:
    w, b1 = sets["w"], sets["b1"]
    shutil.rmtree(sets["b2"])
    target = first_file(b1)
    rel = target.relative_to(b1)
    edit(w / rel, "from WORKING")
    t = Term(["backup", w], tether_env)
    t.child.expect_exact(f"overwrite these 1 modified files in {b1}? [y/N]")
    edit(target, "edited in the BACKUP meanwhile", mtime=1_750_000_000)  # after the listing, before the answer
    t.child.sendline("y")
    t.child.expect_exact("changed since listed")
    t.answer(f"overwrite these 1 modified files in {b1}? [y/N]", "y")
    t.end(0)
    assert_same_tree(w, b1)
    assert [p.read_text() for p in kept(b1, str(rel))] == ["edited in the BACKUP meanwhile"]  # the newer one, not lost


# ---------------------------------------------------------------- config and PATH errors


def test_path_outside_every_set(sets, tether_env) -> None:
    proc = run(["backup", sets["tmp"]], tether_env, rc=2)
    assert f"{sets['tmp']} is not inside any location (configured sets: photos)" in proc.stderr


def test_overlapping_locations_name_both_paths_and_the_line(tmp_path, tether_env, tether_home) -> None:
    w = tmp_path / "w"
    w.mkdir()
    f = write_config(tether_home, f'[sets.a]\nworking = ["{tmp_path}/x"]\nbackup = ["{tmp_path}/y"]\n\n'
                                  f'[sets.b]\nworking = ["{w}"]\nbackup = ["{w}/copy"]\n')  # fmt: skip
    proc = run(["backup", w], tether_env, rc=2)
    assert f"{f}:7: sets.b.backup: WORKING {w} and BACKUP {w}/copy overlap" in proc.stderr
    write_config(tether_home, f'[sets.b]\nworking = ["{w}"]\nbackups = ["/b"]\n')
    proc = run(["locations"], tether_env, rc=2)
    assert ":3: sets.b.backups: unknown key 'backups'" in proc.stderr and "did you mean 'backup'?" in proc.stderr


def test_no_accessible_backup(tmp_path, tether_env, tether_home) -> None:
    w = tmp_path / "w"
    w.mkdir()
    write_config(tether_home, f'[sets.s]\nworking = ["{w}"]\nbackup = ["{tmp_path}/disk1", "{tmp_path}/disk2"]\n')
    proc = run(["backup", w], tether_env, rc=1)
    assert f"no accessible BACKUP in set s (configured: {tmp_path}/disk1, {tmp_path}/disk2)" in proc.stderr
    assert "mount the disk" in proc.stderr


def test_locations_lists_sets_accessibility_and_free_space(sets, tether_env) -> None:
    out = run(["locations"], tether_env, rc=0).stdout.splitlines()
    assert out[0] == "photos (keep_versions 5)"
    assert out[1].split()[:3] == ["WORKING", str(sets["w"]), "accessible"] and out[1].endswith("free")
    assert out[4].split() == ["BACKUP", f"{sets['tmp']}/usb", "not", "accessible"]
    doc = json.loads(run(["locations", "--json"], tether_env, rc=0).stdout)
    locs = doc["sets"][0]["locations"]
    assert [(r["role"], r["accessible"]) for r in locs] == [("WORKING", True), ("BACKUP", True), ("BACKUP", True),
                                                            ("BACKUP", False)]  # fmt: skip
    assert locs[0]["free_bytes"] > 0 and locs[3]["free_bytes"] is None

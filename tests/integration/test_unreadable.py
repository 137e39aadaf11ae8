"""A folder without execute permission: its names can be listed, its entries cannot be read.
tether runs without root's read-anything capabilities here (tests/rig/run.py), as a user does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rig.live import wait_for, write_job_text
from tests.rig.run import tether_unprivileged


@pytest.mark.parametrize("job", ["bisync", "locations"])
def test_a_folder_that_loses_its_execute_bit_is_skipped_and_nothing_below_it_deleted(
    tmp_path: Path, tether_env: dict[str, str], job: str
) -> None:
    """Its names can be listed but not its entries: bisync took them for deleted (and deleted
    them on the other side), locations ended with a traceback."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "locked").mkdir(parents=True)
    (a / "locked" / "precious.txt").write_text("keep\n")
    for i in range(30):  # so that one deletion is well under bisync's guard
        (a / f"f{i}").write_text(f"{i}\n")
    b.mkdir()
    if job == "bisync":
        write_job_text(
            tether_env, "h", f'kind = "bisync"\npath1 = {json.dumps(str(a))}\npath2 = {json.dumps(str(b))}\n'
        )
        args = ["sync", "h"]
    else:
        conf = Path(tether_env["TETHER_HOME"]) / "config" / "locations.toml"
        conf.parent.mkdir(parents=True)
        conf.write_text(f"[sets.h]\nworking = [{json.dumps(str(a))}]\nbackup = [{json.dumps(str(b))}]\n")
        args = ["work", "-m", "-D", str(b)]  # from the backup into the working, deleting there
    first = tether_unprivileged(["sync", "h"] if job == "bisync" else ["backup", str(a)], tether_env)
    assert first.returncode == 0, first.stderr
    (a / "locked").chmod(0o644)
    try:
        if job == "locations":  # make the backup side the locked one: work -D would delete in a
            (a / "locked").chmod(0o755)
            (b / "locked").chmod(0o644)
        proc = tether_unprivileged(args, tether_env)
    finally:
        (a / "locked").chmod(0o755)
        (b / "locked").chmod(0o755)
    assert "could not be read" in proc.stdout + proc.stderr or "cannot be read" in proc.stdout + proc.stderr, proc
    assert (a / "locked" / "precious.txt").read_text() == "keep\n"
    assert (b / "locked" / "precious.txt").read_text() == "keep\n"


@pytest.mark.parametrize("mode", ["one-shot", "continuous"])
def test_a_folder_that_cannot_be_listed_holds_back_no_other_deletion(
    tmp_path: Path, tether_env: dict[str, str], mode: str
) -> None:
    """rsync deletes nothing in a pass that could not list part of the source (its safety), so one
    unreadable folder kept every deletion from the target for as long as it stayed: a mirror
    restarted after a file was deleted never deleted it there. Now the folder is left as it is
    on the target, said, and the deletion goes (kept as a version). The folder's name is a
    pattern to rsync, as a user's names can be: excluded by a name read as a pattern, it would
    not be excluded, and nothing would be deleted. (rsync's incremental recursion deletes folder
    by folder, and stops at the first error: the deletion is in a folder listed after it.)"""
    a, b = tmp_path / "a", tmp_path / "b"
    locked = a / "lo[c]ked *?"
    locked.mkdir(parents=True)
    (locked / "precious.txt").write_text("keep\n")
    (a / "zz").mkdir()
    (a / "zz" / "gone.txt").write_text("old\n")
    (a / "stays.txt").write_text("stays\n")
    write_job_text(
        tether_env, "h", f'source = {json.dumps(str(a))}\ntargets = [{json.dumps(str(b))}]\ndelete = "trash"\n'
    )
    first = tether_unprivileged(["sync", "h"], tether_env)
    assert first.returncode == 0, first.stderr
    (a / "zz" / "gone.txt").unlink()
    locked.chmod(0o644)
    try:
        if mode == "one-shot":
            proc = tether_unprivileged(["sync", "h"], tether_env)
            said = proc.stdout + proc.stderr
        else:
            started = tether_unprivileged(["start", "h"], tether_env)
            assert started.returncode == 0, started.stderr
            try:
                wait_for(lambda: not (b / "zz" / "gone.txt").exists(), 60, "the deletion to reach the target")
            finally:
                tether_unprivileged(["stop", "h"], tether_env)
            said = (Path(tether_env["TETHER_HOME"]) / "state" / "logs" / "h.log").read_text()
    finally:
        locked.chmod(0o755)
    assert not (b / "zz" / "gone.txt").exists()
    assert (b / "lo[c]ked *?" / "precious.txt").read_text() == "keep\n"
    assert (b / "stays.txt").read_text() == "stays\n"
    assert "lo[c]ked *?" in said and "Permission denied" in said, said
    if mode == "one-shot":
        assert "left as it is on the target" in said and "fix the files" not in said, said
    kept = list((b / ".tether" / "versions" / "zz").glob("gone~*"))
    assert kept and kept[0].read_text() == "old\n", "the deleted file was not kept as a version"

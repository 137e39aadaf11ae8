"""A folder without execute permission: its names can be listed, its entries cannot be read.
tether runs without root's read-anything capabilities here (tests/rig/run.py), as a user does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rig.live import write_job_text
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

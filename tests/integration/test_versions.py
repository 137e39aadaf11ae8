"""One layout and one listing for every kept version: what a mirror's trash, a bisync pass (an
overwrite, a conflict either way) and a locations run keep, each made by the real command and
listed by `tether versions`; the older layouts are read where they lie."""

from __future__ import annotations

import os
from pathlib import Path

from tests.rig.run import tether, tether_json


def _job(env: dict[str, str], name: str, body: str) -> None:
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{name}.toml").write_text(body)


def _listed(env: dict[str, str], where: str | Path) -> list[tuple[str, str, int]]:
    doc = tether_json(["versions", str(where)], env, check_rc=0)
    return sorted((v["origin"], v["path"], v["size"]) for v in doc["versions"])


def test_every_kind_of_kept_version_is_listed_by_one_command(tmp_path: Path, tether_env: dict[str, str]) -> None:
    # mirror, delete = "trash": a removed file and an overwritten one
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "gone.txt").write_text("removed later\n")
    (src / "kept.txt").write_text("first\n")
    _job(tether_env, "m", f'source = "{src}"\ntargets = ["{dst}"]\ndelete = "trash"\n')
    tether(["sync", "m"], tether_env, check_rc=0)
    (src / "gone.txt").unlink()
    (src / "kept.txt").write_text("second, longer\n")
    tether(["sync", "m"], tether_env, check_rc=0)
    assert _listed(tether_env, "m") == [("deleted", "gone.txt", 14), ("replaced", "kept.txt", 6)]

    # bisync: a conflict kept both ways, and a conflict settled by "newer" (the loser backed up)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "doc.txt").write_text("v0\n")
    (a / "old.txt").write_text("v0\n")
    _job(tether_env, "kb", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    tether(["sync", "kb"], tether_env, check_rc=0)
    (a / "doc.txt").write_text("edit on a\n")
    (b / "doc.txt").write_text("edit on b, the newer\n")
    os.utime(a / "doc.txt", (1_000_000, 1_000_000))
    tether(["sync", "kb"], tether_env, check_rc=0)
    _job(tether_env, "kb", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\nconflict = "newer"\n')
    (a / "old.txt").write_text("older edit\n")
    (b / "old.txt").write_text("newer edit on b\n")
    os.utime(a / "old.txt", (1_000_000, 1_000_000))
    tether(["sync", "kb"], tether_env, check_rc=0)
    listed = _listed(tether_env, "kb")
    assert ("conflict", "doc.txt", 10) in listed  # the copy's path is the file it is a version of
    assert ("conflict", "old.txt", 11) in listed  # a's losing version, kept in a's versions
    assert {o for o, _p, _s in listed} == {"conflict"}
    assert len(list((a / ".tether" / "versions").glob("old~*~conflict.txt"))) == 1

    # locations: what a `work` run replaced
    w, bk = tmp_path / "w", tmp_path / "bk"
    w.mkdir()
    bk.mkdir()
    (w / "f.txt").write_text("working copy\n")
    (bk / "f.txt").write_text("from the backup\n")
    os.utime(bk / "f.txt", (1_700_000_000, 1_700_000_000))
    cfg = Path(tether_env["TETHER_HOME"]) / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "locations.toml").write_text(f'[sets.s]\nworking = ["{w}"]\nbackup = ["{bk}"]\n')
    tether(["work", "-m", "--from", str(bk), str(w)], tether_env, check_rc=0)
    assert _listed(tether_env, w) == [("replaced", "f.txt", 13)]

    # and the human listing names each, with where it lies
    out = tether(["versions", "kb"], tether_env, check_rc=0).stdout
    assert "conflict" in out and ".tether/versions/old~" in out
    assert "no kept versions" in tether(["versions", str(src)], tether_env, check_rc=0).stdout


def test_versions_kept_in_the_older_layouts_are_listed_and_pruned_by_age(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """A replica written by an earlier release: its trash by day, bisync's stamped backups and a
    locations run's folder stay where they are, are listed with the new ones, and go by age."""
    a, b = tmp_path / "a", tmp_path / "b"
    for rel, body in [("f.txt", "f"), (".tether/trash/2026-12-01/gone.txt", "gone"),
                      (".tether/trash/2020-01-01/ancient.txt", "ancient"),
                      (".tether/backups/d/x.txt.20261201-101112-000000", "x before"),
                      (".tether/backups/20261201-101112/y.txt", "y before")]:  # fmt: skip
        (a / rel).parent.mkdir(parents=True, exist_ok=True)
        (a / rel).write_text(body)
    listed = _listed(tether_env, a)
    assert listed == [("backup", "y.txt", 8), ("replaced", "d/x.txt", 8), ("trash", "ancient.txt", 7),
                      ("trash", "gone.txt", 4)]  # fmt: skip
    b.mkdir()
    _job(tether_env, "old", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\ntrash_days = 30\n')
    tether(["sync", "old"], tether_env, check_rc=0)  # the first pass prunes: ancient goes, the rest stays
    assert ("trash", "ancient.txt", 7) not in _listed(tether_env, a) and len(_listed(tether_env, a)) == 3

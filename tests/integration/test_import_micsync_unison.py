"""Imported micsync and unison configs, run for real: the converter's output is written into a
TETHER_HOME and tether syncs with it; where unison is installed, unison runs the same profile on
twin trees and both results must agree (the only differences being what the import reported as
dropped or as a changed meaning).

The files come from tests/data/import/, written from the tools' manuals; @NAME@ placeholders are
filled in with this test's folders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rig.kept import kept
from tests.rig.run import contents, tether
from tests.rig.sshd import SshServer
from tether.importers import Imported, micsync, unison

DATA = Path(__file__).resolve().parent.parent / "data" / "import"
T0 = 1_700_000_000  # a fixed mtime, far from now


def fill(name: str, **values: str | Path) -> str:
    text = (DATA / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    assert "@" not in text.replace("user@", ""), text
    return text


def import_unison(env: dict[str, str], tmp_path: Path, data: str, name: str, **values: str | Path) -> Imported:
    """Convert the filled-in profile and write the job, as `tether import-config` would."""
    profile = tmp_path / "dot-unison" / f"{name}.prf"
    profile.parent.mkdir(exist_ok=True)
    profile.write_text(fill(data, **values))
    out = unison.convert(profile.read_text(), profile, name)
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{name}.toml").write_text(out.jobs[name])
    tether(["check", name], env, check_rc=0)
    return out


def run_unison(tmp_path: Path, data: str, name: str, **values: str | Path) -> None:
    """The real unison on the same profile (its archives in a private UNISON directory)."""
    if shutil.which("unison") is None:
        pytest.skip("unison is not installed (scripts/setup --dev installs it)")
    udir = tmp_path / "unison-dir"
    udir.mkdir(exist_ok=True)
    (udir / f"{name}.prf").write_text(fill(data, **values))
    env = dict(os.environ, UNISON=str(udir), HOME=str(tmp_path))
    proc = subprocess.run(
        ["unison", name, "-ui", "text"], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: some files skipped (conflicts)


def put(root: Path, files: dict[str, str], mtime: int = T0) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.utime(p, (mtime, mtime))


def twins(tmp_path: Path, side1: dict[str, str], side2: dict[str, str]) -> dict[str, Path]:
    """u1/u2 for unison, t1/t2 for tether, with the same files."""
    roots = {k: tmp_path / k for k in ("u1", "u2", "t1", "t2")}
    for k, root in roots.items():
        root.mkdir()
        put(root, side1 if k.endswith("1") else side2)
    return roots


# ----------------------------------------------------------------------------- unison


TREE1 = {
    "ok.txt": "1", "temp.c": "1", "a~": "1", "~": "1", ".a~": "1", "x.o": "1", ".x.o": "1", "sub/y.o": "1",
    "CVS/Entries": "1", "m.cmo": "1", ".m.cmo": "1", "ab.c": "1", ".ab.c": "1", "qx": "1", ".qx": "1",
    "u/pilot/backup/Archive_1": "1", ".u/pilot/backup/Archive_1": "1", "a/b/f": "1", "a/bc": "1",
    "build/out/f": "1", "src/build/f": "1", "old.bak": "1", "d/.old.bak": "1", "x/cache/f": "1",
    "keep/a.o": "1", "keep/deep/b~": "1", "lib/important.o": "1",
}  # fmt: skip
TREE2 = {"from2.txt": "2", "two/z.o": "2", "two/.z~": "2", "two/cache/g": "2", "two/important.o": "2"}


def test_ignore_patterns_sync_what_unison_syncs(tmp_path: Path, tether_env: dict[str, str]) -> None:
    r = twins(tmp_path, TREE1, TREE2)
    out = import_unison(tether_env, tmp_path, "unison/oracle.prf", "oracle", ROOT1=r["t1"], ROOT2=r["t2"])
    assert [k for k, _ in out.dropped] == ["ignore = Regex .*/cache/.*"]
    tether(["sync", "oracle"], tether_env, check_rc=0)
    synced = set(contents(r["t1"])) & set(contents(r["t2"]))
    assert {"ok.txt", ".x.o", "keep/a.o", "keep/deep/b~", "lib/important.o", "a/bc", "src/build/f"} <= synced
    assert not {"a~", ".a~", "x.o", "CVS/Entries", "a/b/f", "build/out/f", "old.bak"} & set(contents(r["t2"]))
    run_unison(tmp_path, "unison/oracle.prf", "oracle", ROOT1=r["u1"], ROOT2=r["u2"])
    dropped = {"x/cache/f", "two/cache/g"}  # what the dropped `Regex .*/cache/.*` kept out in unison only
    for u, t in (("u1", "t1"), ("u2", "t2")):
        got, want = contents(r[t]), contents(r[u])
        assert {k: v for k, v in got.items() if k not in dropped} == {k: v for k, v in want.items() if k not in dropped}
        assert dropped <= set(got) and not dropped <= set(want)  # tether synced them, as the report said


def test_path_lines_sync_only_those_subtrees_as_unison_does(tmp_path: Path, tether_env: dict[str, str]) -> None:
    side1 = {
        "current/papers/a.tex": "1", "current/papers/a.o": "1", "current/papers/keep.o": "1", "current/todo": "1",
        "Mail/inbox/1": "1", "Mail/spam/1": "1", ".netscape/bookmarks.html": "1", ".netscape/cache": "1",
        "music/a.mp3": "1", "top.txt": "1",
    }  # fmt: skip
    side2 = {"Mail/drafts/d1": "2", "Mail/sent/s1": "2", "elsewhere.txt": "2"}
    r = twins(tmp_path, side1, side2)
    out = import_unison(tether_env, tmp_path, "unison/paths.prf", "paths", ROOT1=r["t1"], ROOT2=r["t2"])
    assert out.dropped == []
    tether(["sync", "paths"], tether_env, check_rc=0)
    assert set(contents(r["t2"])) == {
        "current/papers/a.tex", "current/papers/keep.o", "Mail/inbox/1", "Mail/drafts/d1", "Mail/sent/s1",
        ".netscape/bookmarks.html", "elsewhere.txt",
    }  # fmt: skip
    run_unison(tmp_path, "unison/paths.prf", "paths", ROOT1=r["u1"], ROOT2=r["u2"])
    assert contents(r["t1"]) == contents(r["u1"]) and contents(r["t2"]) == contents(r["u2"])


def test_prefer_a_root_settles_conflicts_as_unison_does(tmp_path: Path, tether_env: dict[str, str]) -> None:
    r = twins(tmp_path, {"a.txt": "a", "both.txt": "same", "c.txt": "c"}, {"b.txt": "b"})
    values = {"BACKUPDIR": tmp_path / "unison-backups"}
    out = import_unison(tether_env, tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["t1"], ROOT2=r["t2"], **values)
    job = out.jobs["prefer"]
    assert 'conflict = "path2"' in job and "backups_keep = 3" in job
    assert [k.split(" = ")[0] for k, _ in out.dropped] == ["backupdir"]
    unison_too = shutil.which("unison") is not None
    tether(["sync", "prefer"], tether_env, check_rc=0)
    if unison_too:
        run_unison(tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["u1"], ROOT2=r["u2"], **values)
    for one, two in (("t1", "t2"), ("u1", "u2")) if unison_too else (("t1", "t2"),):
        assert (
            contents(r[one]) == contents(r[two]) == {"a.txt": b"a", "both.txt": b"same", "c.txt": b"c", "b.txt": b"b"}
        )
        put(r[one], {"both.txt": "from 1", "a.txt": "a2"}, T0 + 10)
        put(r[two], {"both.txt": "from 2"}, T0 + 20)
        (r[two] / "b.txt").unlink()
    tether(["sync", "prefer"], tether_env, check_rc=0)
    expected = {"a.txt": b"a2", "both.txt": b"from 2", "c.txt": b"c"}
    assert contents(r["t1"]) == contents(r["t2"]) == expected
    saved = [p.read_text() for p in kept(r["t1"], "both.txt")]
    assert saved == ["from 1"]  # the loser is kept on its side
    if unison_too:
        run_unison(tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["u1"], ROOT2=r["u2"], **values)
        assert contents(r["u1"]) == contents(r["u2"]) == expected


def test_a_change_against_a_delete_on_the_preferred_side_is_kept(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """The one place the import's note says tether differs from unison's prefer: no change is lost."""
    r = twins(tmp_path, {"c.txt": "c", "other.txt": "o"}, {})
    values = {"BACKUPDIR": tmp_path / "unison-backups"}
    out = import_unison(tether_env, tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["t1"], ROOT2=r["t2"], **values)
    assert "unlike unison" in dict(out.notes)[f"prefer = {r['t2']}"]
    tether(["sync", "prefer"], tether_env, check_rc=0)
    put(r["t1"], {"c.txt": "changed"}, T0 + 10)
    (r["t2"] / "c.txt").unlink()
    tether(["sync", "prefer"], tether_env, check_rc=0)
    assert contents(r["t1"]) == contents(r["t2"]) == {"c.txt": b"changed", "other.txt": b"o"}
    if shutil.which("unison"):
        run_unison(tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["u1"], ROOT2=r["u2"], **values)
        put(r["u1"], {"c.txt": "changed"}, T0 + 10)
        (r["u2"] / "c.txt").unlink()
        run_unison(tmp_path, "unison/prefer.prf", "prefer", ROOT1=r["u1"], ROOT2=r["u2"], **values)
        assert contents(r["u1"]) == contents(r["u2"]) == {"other.txt": b"o"}  # the preferred delete won


def test_ssh_root_syncs_with_the_test_server(tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer) -> None:
    local, remote = tmp_path / "laptop", tmp_path / "server" / "notes"
    put(local, {"a.md": "a", "draft.tmp": "t", "private/key": "k", "sub/b.md": "b"})
    put(remote, {"c.md": "c", "both.md": "old"}, T0)
    put(local, {"both.md": "new"}, T0 + 50)
    out = import_unison(
        tether_ssh_env, tmp_path, "unison/remote.prf", "remote", LOCAL=local, HOST=sshd.alias, REMOTE=remote
    )
    assert f'path2 = "{sshd.alias}:{remote}"' in out.jobs["remote"]
    assert 'conflict = "newer"' in out.jobs["remote"]
    assert [k for k, _ in out.dropped] == ["sshargs = -C"]
    tether(["sync", "remote"], tether_ssh_env, check_rc=0)
    assert contents(remote) == {"a.md": b"a", "sub/b.md": b"b", "c.md": b"c", "both.md": b"new"}
    assert contents(local) == {**contents(remote), "draft.tmp": b"t", "private/key": b"k"}
    assert os.stat(remote / "a.md").st_mtime == T0  # times carried


def test_manual_profiles_pass_tether_check(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """The manual's sample profiles (saul is not reachable, so only checked, not run)."""
    for name in ("basic", "default", "workingset"):
        path = DATA / "unison" / f"{name}.prf"
        out = unison.convert(path.read_text(), path, name)
        jobs = Path(tether_env["TETHER_HOME"]) / "config" / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        (jobs / f"{name}.toml").write_text(out.jobs[name])
        proc = tether(["check", name], tether_env, check_rc=0)
        assert "bisync /home/bcpierce <-> saul:/home/bcpierce" in proc.stdout


# ----------------------------------------------------------------------------- micsync


def import_micsync(env: dict[str, str], file: Path) -> Imported:
    out = micsync.convert(file.read_text(), file, "micsync")
    assert out.locations is not None
    config = Path(env["TETHER_HOME"]) / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "locations.toml").write_text(out.locations)
    return out


def test_micsync_sets_back_up_with_tether(tmp_path: Path, tether_env: dict[str, str]) -> None:
    home, disk1 = tmp_path / "user", tmp_path / "disk1"
    env = dict(tether_env, HOME=str(home))
    file = home / ".micsync.json"
    file.parent.mkdir()
    file.write_text(fill("micsync-home.json", DISK1=disk1))
    put(home / "Pictures", {"2024/a.jpg": "a", "2024/trip/b.jpg": "b", "2023/old.jpg": "o"})
    put(home / "Music", {"song.ogg": "s"})
    put(disk1 / "Pictures", {"2024/only-on-disk.jpg": "d"})
    (disk1 / "Music").mkdir()
    (home / "disk2" / "Pictures").mkdir(parents=True)  # `./disk2/Pictures/`: relative, so below home now
    out = import_micsync(env, file)
    assert "relative" in dict(out.notes)["configs[0].backup[1]"]
    listing = tether(["locations"], env, check_rc=0).stdout
    assert "pictures-working-on-the-laptop-backups (" in listing and "music" in listing
    tether(["backup", home / "Pictures" / "2024", "-y"], env, check_rc=0)
    for backup in (disk1 / "Pictures", home / "disk2" / "Pictures"):
        got = contents(backup)
        assert got["2024/a.jpg"] == b"a" and got["2024/trip/b.jpg"] == b"b"
        assert "2023/old.jpg" not in got  # only the PATH given is backed up
    assert contents(disk1 / "Pictures")["2024/only-on-disk.jpg"] == b"d"  # backup never deletes
    tether(["backup", home / "Music", "-y"], env, check_rc=0)
    assert contents(disk1 / "Music") == {"song.ogg": b"s"}


def test_micsync_readme_example_is_a_valid_locations_file(tmp_path: Path, tether_env: dict[str, str]) -> None:
    out = import_micsync(tether_env, DATA / "micsync.json")
    assert out.dropped == []
    listing = tether(["locations"], tether_env, check_rc=0).stdout
    assert "my-first-configuration-it-contains-1" in listing and "/example/path" in listing

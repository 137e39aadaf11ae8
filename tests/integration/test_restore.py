"""Restore round trips through the real commands: every version a mirror's trash and a bisync
pass kept (an overwrite, a delete, a conflict) comes back byte for byte with its mode and mtime,
and a folder restored to a time is that folder's tree then, exactly.

Version stamps are whole seconds, so the tests let the clock pass one second between "then" and
the changes (a clock they need, not a race they wait out)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.rig.kept import kept
from tests.rig.live import write_job
from tests.rig.rclone import REMOTE, RcloneServer
from tests.rig.run import tether, tether_json
from tests.rig.sshd import SshServer

Tree = dict[str, tuple[bytes, int, int]]  # path -> (bytes, mode, mtime_ns)


def snapshot(root: Path) -> Tree:
    out: Tree = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] == ".tether" or not p.is_file():
            continue
        st = p.lstat()
        out[str(rel)] = (p.read_bytes(), st.st_mode & 0o7777, st.st_mtime_ns)
    return out


def write(root: Path, rel: str, body: str, mode: int, mtime: int | None = None) -> None:
    """A file with a known mode, and a known mtime for what existed "then" (one written after
    keeps the clock's: a file made since, with an mtime from before, reads as older, as cp -p's)."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(body)
    p.chmod(mode)
    if mtime is not None:
        os.utime(p, ns=(mtime, mtime))


def a_second_passes() -> float:
    """'Then', as --at takes it; returns once the clock is a second past it."""
    then = time.time()
    while time.time() < then + 1.05:
        time.sleep(0.05)
    return then


def at(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t + 0.5))


def test_a_mirror_s_kept_versions_come_back_and_a_folder_as_it_was(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src, "d/a.txt", "a one\n", 0o640, 1_700_000_000_123_456_789)
    write(src, "d/b.txt", "b one\n", 0o600, 1_700_000_100_000_000_001)
    write(src, "top.txt", "outside the folder\n", 0o644, 1_700_000_200_000_000_000)
    write_job(tether_env, "m", src, [str(dst)], delete="trash")
    tether(["sync", "m"], tether_env, check_rc=0)
    then_tree, then = snapshot(src), a_second_passes()
    write(src, "d/a.txt", "a two, longer\n", 0o600, 1_700_000_300_000_000_000)
    (src / "d" / "b.txt").unlink()
    write(src, "d/c.txt", "new after then\n", 0o644)
    write(src, "top.txt", "changed, but not in the folder\n", 0o644, 1_700_000_500_000_000_000)
    tether(["sync", "m"], tether_env, check_rc=0)

    listed = tether_json(["versions", "m", "d"], tether_env, check_rc=0)["versions"]
    assert sorted((v["path"], v["origin"], v["n"]) for v in listed) == [("d/a.txt", "replaced", 1),
                                                                       ("d/b.txt", "deleted", 1)]  # fmt: skip
    dry = tether(["restore", "m", "d/b.txt", "--dry-run"], tether_env, check_rc=0).stdout
    assert "would put back  d/b.txt (deleted" in dry and not (src / "d" / "b.txt").exists()
    tether(["restore", "m", "d/b.txt"], tether_env, check_rc=0)  # into the source: the next pass sends it
    assert snapshot(src)["d/b.txt"] == then_tree["d/b.txt"]
    tether(["restore", "m", "d/a.txt", "--version", "1"], tether_env, check_rc=0)
    assert snapshot(src)["d/a.txt"] == then_tree["d/a.txt"]  # bytes, mode and mtime
    assert [p.read_text() for p in kept(src, "d/a.txt", "replaced")] == ["a two, longer\n"]  # undo-able

    write(src, "d/a.txt", "a three\n", 0o644, 1_700_000_600_000_000_000)
    tether(["sync", "m"], tether_env, check_rc=0)
    doc = tether_json(["restore", "m", "d", "--at", at(then)], tether_env, check_rc=0)
    assert [r["path"] for r in doc["restored"]] == ["d/a.txt"] and doc["removed"] == ["d/c.txt"]
    got = snapshot(src)
    assert {k: v for k, v in got.items() if k.startswith("d/")} == {k: v for k, v in then_tree.items()
                                                                     if k.startswith("d/")}  # fmt: skip
    assert got["top.txt"][0] == b"changed, but not in the folder\n"  # outside the folder: untouched
    assert [p.read_text() for p in kept(src, "d/c.txt", "deleted")] == ["new after then\n"]
    tether(["sync", "m"], tether_env, check_rc=0)
    assert snapshot(dst)["d/a.txt"] == then_tree["d/a.txt"]


def test_a_bisync_pass_s_versions_come_back_and_a_folder_to_another_place(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for rel, mtime in (("x.txt", 1), ("y.txt", 2), ("z.txt", 3), ("sub/p.txt", 4), ("sub/q.txt", 5)):
        write(a, rel, f"{rel} as it was\n", 0o640, 1_700_000_000_000_000_000 + mtime)
    b.mkdir()
    jobs = Path(tether_env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "kb.toml").write_text(f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    tether(["sync", "kb"], tether_env, check_rc=0)
    then_tree, then = snapshot(a), a_second_passes()
    write(b, "x.txt", "x overwritten from b\n", 0o644, 1_700_000_100_000_000_000)  # a's x is replaced
    (a / "y.txt").unlink()  # b's y is deleted (kept in b)
    write(a, "z.txt", "z edited on a\n", 0o644, 1_700_000_200_000_000_000)
    write(b, "z.txt", "z edited on b\n", 0o644, 1_700_000_300_000_000_000)  # a conflict: both kept
    write(a, "sub/p.txt", "p edited on a\n", 0o600, 1_700_000_400_000_000_000)
    (a / "sub" / "q.txt").unlink()
    write(a, "sub/r.txt", "r made on a\n", 0o644)
    tether(["sync", "kb"], tether_env, check_rc=0)

    listed = {(v["path"], v["origin"]) for v in tether_json(["versions", "kb"], tether_env, check_rc=0)["versions"]}
    assert {("x.txt", "replaced"), ("y.txt", "deleted"), ("z.txt", "conflict"), ("sub/p.txt", "replaced"),
            ("sub/q.txt", "deleted")} <= listed  # fmt: skip
    for rel in ("x.txt", "y.txt"):  # each back in path1, as it was, from whichever side kept it
        tether(["restore", "kb", rel], tether_env, check_rc=0)
        assert snapshot(a)[rel] == then_tree[rel]
    loser = next(
        v for v in tether_json(["versions", "kb", "z.txt"], tether_env)["versions"] if v["origin"] == "conflict"
    )
    by_folder = tether_json(["versions", str(a), "z.txt"], tether_env)["versions"]  # the folder, not the job
    assert loser["stored"] in {v["stored"] for v in by_folder if v["origin"] == "conflict"}
    tether(["restore", "kb", "z.txt", "--version", str(loser["n"])], tether_env, check_rc=0)
    assert (a / "z.txt").read_bytes() == (a / loser["stored"]).read_bytes()

    out = tmp_path / "as-it-was"
    tether(["restore", "kb", "sub", "--at", at(then), "--to", str(out)], tether_env, check_rc=0)
    assert snapshot(out) == {k: v for k, v in then_tree.items() if k.startswith("sub/")}
    assert (a / "sub" / "r.txt").exists()  # --to: the live folder is untouched
    tether(["sync", "kb"], tether_env, check_rc=0)
    assert snapshot(a) == snapshot(b)


def test_restore_says_what_it_cannot_do(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src, "d/a.txt", "a\n", 0o644, 1_700_000_000_000_000_000)
    write_job(tether_env, "m", src, [str(dst)], delete="trash")
    tether(["sync", "m"], tether_env, check_rc=0)
    (src / "d" / "a.txt").unlink()
    tether(["sync", "m"], tether_env, check_rc=0)
    assert "no kept version of nothing.txt" in tether(["restore", "m", "nothing.txt"], tether_env, check_rc=2).stderr
    assert "d is a folder" in tether(["restore", "m", "d"], tether_env, check_rc=2).stderr
    assert (
        "versions 1 to 1, not 3" in tether(["restore", "m", "d/a.txt", "--version", "3"], tether_env, check_rc=2).stderr
    )
    assert "is not a time" in tether(["restore", "m", "d", "--at", "soon"], tether_env, check_rc=2).stderr
    assert "outside" in tether(["restore", "m", "../etc/passwd"], tether_env, check_rc=2).stderr
    assert "outside" in tether(["restore", "m", ".tether/versions"], tether_env, check_rc=2).stderr


def test_versions_kept_on_an_ssh_target_are_listed_and_restored(
    tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str]
) -> None:
    """A mirror to an ssh host keeps its versions there: listed through the agent, fetched back
    by rsync into the source, bytes, mode and mtime as kept."""
    src, dst = tmp_path / "src", tmp_path / "far side"
    write(src, "d/a b.txt", "a one\n", 0o640, 1_700_000_000_123_456_789)
    write(src, "-gone", "gone\n", 0o600, 1_700_000_100_000_000_001)
    write_job(tether_ssh_env, "s", src, [f"{sshd.alias}:{dst}"], delete="trash")
    tether(["sync", "s"], tether_ssh_env, check_rc=0)
    before = snapshot(src)
    write(src, "d/a b.txt", "a two\n", 0o644)
    (src / "-gone").unlink()
    tether(["sync", "s"], tether_ssh_env, check_rc=0)
    listed = tether_json(["versions", "s"], tether_ssh_env, check_rc=0)["versions"]
    assert sorted((v["path"], v["origin"]) for v in listed) == [("-gone", "deleted"), ("d/a b.txt", "replaced")]
    assert {v["root"] for v in listed} == {f"{sshd.alias}:{dst}"}
    for rel in ("d/a b.txt", "-gone"):  # a name with a leading '-' after `--`, as with any command
        tether(["restore", "s", "--", rel], tether_ssh_env, check_rc=0)
        assert snapshot(src)[rel] == before[rel]
    tether(["sync", "s"], tether_ssh_env, check_rc=0)
    assert snapshot(dst) == snapshot(src)


def test_versions_kept_on_an_rclone_remote_are_listed_and_restored(
    tmp_path: Path, tether_env: dict[str, str], rclone_sftp: RcloneServer
) -> None:
    env = tether_env | rclone_sftp.env()
    a, far = tmp_path / "a", rclone_sftp.root / "restore-pair"
    write(a, "x.txt", "x as it was\n", 0o644, 1_700_000_000_000_000_000)
    write(a, "stays.txt", "so that path1 is not empty\n", 0o644)
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / "rp.toml").write_text(f'kind = "bisync"\npath1 = "{a}"\npath2 = "{REMOTE}:restore-pair"\n')
    tether(["sync", "rp"], env, check_rc=0)
    (a / "x.txt").unlink()  # deleted on the remote by the next pass: kept there
    tether(["sync", "rp"], env, check_rc=0)
    assert not (far / "x.txt").exists()
    (listed,) = tether_json(["versions", "rp", "x.txt"], env, check_rc=0)["versions"]
    assert (listed["origin"], listed["root"]) == ("deleted", f"{REMOTE}:restore-pair")
    tether(["restore", "rp", "x.txt"], env, check_rc=0)  # fetched by rclone into path1
    assert (a / "x.txt").read_text() == "x as it was\n"

"""Pools: several members used as one, with real rclone and real backends (the local one, and
rclone's own s3, sftp and webdav servers on loopback): placement keeps every cap, the pool's
one view is the source byte for byte, a full pool refuses what fits nowhere, and the definition
is checked like any of tether's files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.rig.live import running, wait_for, write_job
from tests.rig.rclone import REMOTE, RcloneServer
from tests.rig.run import contents, tether, tether_json
from tether.transport.rclone_bin import rclone_program

KB = 1024


def _tree(root: Path, files: dict[str, int], seed: int = 0) -> None:
    for i, (rel, size) in enumerate(files.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([(seed + i) % 251]) * size)


def _members(roots: list[Path]) -> dict[str, bytes]:
    """The pool's one view, made by hand from its members: path -> bytes, each path on one member."""
    out: dict[str, bytes] = {}
    for r in roots:
        for p, data in contents(r).items():
            assert p not in out, f"{p} is on two members"
            out[p] = data
    return out


def _settled(roots: list[Path], src: Path) -> bool:
    """For polling: the members hold the source, each file once (a walk that meets rclone's
    temp file vanishing under it looks again)."""
    try:
        return _members([r for r in roots if r.exists()]) == contents(src)
    except FileNotFoundError:
        return False


def _used(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_a_pool_is_defined_checked_and_shown(tmp_path: Path, tether_env: dict[str, str]) -> None:
    m = [tmp_path / f"m{i}" for i in range(3)]
    for d in m[:2]:
        d.mkdir()
    (m[0] / "old.bin").write_bytes(b"x" * 1000)
    tether(["pool", "create", "box", *map(str, m), "--cap", f"{m[0]}=40M", "--reserve", f"{m[1]}=1G"], tether_env,
           check_rc=0)  # fmt: skip
    doc = tether_json(["pool", "status", "box", "--json"], tether_env, check_rc=0)
    rows = {r["name"]: r for r in doc["members"]}
    assert rows[str(m[0])] | {"free": 0, "total": 0} == {"name": str(m[0]), "up": True, "files": 1, "used": 1000,
                                                        "free": 0, "total": 0, "cap": 40 * 2**20, "reserve": 0,
                                                        "error": ""}  # fmt: skip
    assert rows[str(m[1])]["reserve"] == 2**30 and rows[str(m[1])]["free"] > 0
    assert rows[str(m[2])]["up"] and rows[str(m[2])]["files"] == 0  # nothing put there yet: empty, not down
    assert doc["total"]["files"] == 1 and doc["total"]["members_down"] == 0
    assert tether_json(["pool", "list", "--json"], tether_env, check_rc=0)["pools"][0]["name"] == "box"
    # bad input: said, nothing written
    for args, words in (
        (["pool", "create", "box", str(m[0])], "pass --force"),
        (["pool", "create", "two", str(m[0]), str(m[0])], "given twice"),
        (["pool", "create", "two", str(m[0]), "--cap", "nowhere=1G"], "is not a member"),
        (["pool", "create", "two", str(m[0]), "--cap", f"{m[0]}=lots"], "is not a size"),
        (["pool", "create", "bad/name", str(m[0])], "not a valid pool name"),
        (["pool", "status", "nope"], "no pool named 'nope'"),
    ):
        proc = tether(args, tether_env, check_rc=2)
        assert words in proc.stderr, (args, proc.stderr)
    assert sorted(p.name for p in (Path(tether_env["TETHER_HOME"]) / "config" / "pools").iterdir()) == ["box.toml"]
    (Path(tether_env["TETHER_HOME"]) / "config" / "pools" / "box.toml").write_text(
        f'members = ["{m[0]}"]\npolicy = "fullest"\n'
    )
    proc = tether(["pool", "status", "box"], tether_env, check_rc=2)
    assert "box.toml:2: policy must be one of most-free, least-used, by-path" in proc.stderr


@pytest.mark.parametrize("policy", ["most-free", "least-used", "by-path"])
def test_a_mirror_into_a_capped_pool_places_every_file_under_the_caps(
    tmp_path: Path, tether_env: dict[str, str], policy: str
) -> None:
    src = tmp_path / "src"
    files = {f"d{d}/f{i}.bin": (i % 7 + 1) * 10 * KB for d in range(6) for i in range(12)}  # ~2.3 MB
    _tree(src, files)
    m = [tmp_path / f"m{i}" for i in range(3)]
    cap = 1000 * KB
    tether(["pool", "create", "p", *map(str, m), "--policy", policy, *(f"--cap={x}={cap}" for x in m)], tether_env,
           check_rc=0)  # fmt: skip
    tether(["mirror", src, "pool:p"], tether_env, check_rc=0)
    assert _members([d for d in m if d.exists()]) == contents(src)  # every file, once, byte for byte
    assert all(_used(d) <= cap for d in m if d.exists())
    if policy == "by-path":  # a folder's files together
        for d in range(6):
            assert sum((x / f"d{d}").is_dir() for x in m if x.exists()) >= 1
    again = tether(["mirror", src, "pool:p", "-v"], tether_env, check_rc=0)
    assert "0 files updated" in again.stdout and "no rcd was started" in again.stderr + again.stdout
    # an edit, a rename, a delete: the pool follows, caps still hold
    (src / "d0" / "f0.bin").write_bytes(b"e" * 30 * KB)
    os.rename(src / "d1", src / "d1-renamed")
    (src / "d2" / "f3.bin").unlink()
    tether(["mirror", src, "pool:p"], tether_env, check_rc=0)
    assert _members([d for d in m if d.exists()]) == contents(src)
    assert all(_used(d) <= cap for d in m if d.exists())


def test_a_full_pool_sends_nothing_of_what_fits_nowhere_and_says_so(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    _tree(src, {f"f{i}.bin": 300 * KB for i in range(8)})  # 2.4 MB into 2 x 1 MB
    m = [tmp_path / "m0", tmp_path / "m1"]
    tether(["pool", "create", "small", *map(str, m), *(f"--cap={x}=1M" for x in m)], tether_env, check_rc=0)
    proc = tether(["mirror", src, "pool:small"], tether_env, check_rc=1)
    assert "pool small is full: no member can take" in proc.stdout + proc.stderr
    assert "tether pool status small" in proc.stdout + proc.stderr
    held = _members([d for d in m if d.exists()])
    assert len(held) == 6 and all(held[p] == (src / p).read_bytes() for p in held)  # whole files only
    assert all(_used(d) <= 2**20 for d in m)


def _renamed(env: dict[str, str], name: str) -> dict[str, str]:
    """A served backend's variables for a remote called `name` (each member its own remote)."""
    old = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    return {k.replace(old, f"RCLONE_CONFIG_{name.upper()}_"): v for k, v in env.items() if k.startswith(old)}


def test_a_pool_of_real_backends_is_one_exact_folder(
    tmp_path: Path,
    tether_env: dict[str, str],
    rclone_bulk_s3: RcloneServer,
    rclone_bulk_sftp: RcloneServer,
    rclone_bulk_webdav: RcloneServer,
) -> None:
    """s3 says no free space (rclone's union cannot rank it by room): it is counted, and takes its
    share; sftp and webdav as rclone serves them; a local disk. One mirror, one continuous job."""
    tag = os.urandom(4).hex()
    env = {**tether_env, "RCLONE_CONFIG": str(rclone_bulk_s3.config)}
    env |= _renamed(rclone_bulk_s3.env(), "ps3") | _renamed(rclone_bulk_sftp.env(), "psftp")
    env |= _renamed(rclone_bulk_webdav.env(), "pdav")
    local = tmp_path / "disk"
    members = [f"ps3:bucket/pool-{tag}", f"psftp:pool-{tag}", f"pdav:pool-{tag}", str(local)]
    served = [rclone_bulk_s3.root / "bucket" / f"pool-{tag}", rclone_bulk_sftp.root / f"pool-{tag}",
              rclone_bulk_webdav.root / f"pool-{tag}", local]  # fmt: skip
    tether(["pool", "create", "mix", *members, "--policy", "least-used"], env, check_rc=0)
    src = tmp_path / "src"
    _tree(src, {f"d{d}/f{i}.txt": 2 * KB + i for d in range(4) for i in range(10)} | {"top.txt": 5})
    tether(["mirror", src, "pool:mix"], env, check_rc=0)
    assert _members([s for s in served if s.exists()]) == contents(src)
    assert sum(1 for s in served if s.exists() and contents(s)) == 4  # least-used spread it over all four
    status = tether_json(["pool", "status", "mix", "--json"], env, check_rc=0)
    assert [r["up"] for r in status["members"]] == [True] * 4 and status["total"]["files"] == 41
    # the continuous mirror carries a create, an edit, a folder's rename and a delete
    write_job(env, "cloud", src, ["pool:mix"], interval=0)
    with running(env, "cloud"):
        wait_for(lambda: _settled(served, src), 60, "the first pass")
        (src / "new.txt").write_text("new\n")
        (src / "d0" / "f1.txt").write_text("edited\n")
        os.rename(src / "d1", src / "d1-moved")
        (src / "d2" / "f2.txt").unlink()

        wait_for(lambda: _settled(served, src), 90, "the pool to follow the source")
    listed = subprocess.run([rclone_program(), "lsjson", "-R", "--files-only", "--exclude", "/.tether/**",
                             "--config", "/dev/null", *_union_arg(members)], env=env, capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert sorted(i["Path"] for i in json.loads(listed.stdout)) == sorted(contents(src))  # rclone's one view


def _union_arg(members: list[str]) -> list[str]:
    ups = " ".join(f'"{m}"' for m in members)
    return [f":union,upstreams='{ups}':"]


def _pushed(tmp_path: Path, env: dict[str, str]) -> tuple[Path, list[Path]]:
    """A source pushed by job `push` into pool `home` of three capped local members."""
    src = tmp_path / "src"
    _tree(src, {f"d{d}/f{i}.bin": 20 * KB + i for d in range(3) for i in range(8)} | {"a b/ü q'.txt": 9})
    m = [tmp_path / f"m{i}" for i in range(3)]
    tether(["pool", "create", "home", *map(str, m), *(f"--cap={x}=300K" for x in m)], env, check_rc=0)
    write_job(env, "push", src, ["pool:home"])
    tether(["sync", "push"], env, check_rc=0)
    assert _members([d for d in m if d.exists()]) == contents(src)
    return src, m


def test_a_mounted_pool_is_one_folder_byte_for_byte(tmp_path: Path, tether_env: dict[str, str]) -> None:
    from tether.pools.mount import fuse_missing

    why = fuse_missing()
    if why is not None:
        pytest.skip(f"FUSE cannot be used here: {why}")
    src, _m = _pushed(tmp_path, tether_env)
    view = tmp_path / "view"
    tether(["pool", "mount", "home", view], tether_env, check_rc=0)
    try:
        assert contents(view) == contents(src)  # through FUSE, every byte
        assert "mounted at" in tether(["pool", "mount", "home", tmp_path / "other"], tether_env, check_rc=2).stderr
    finally:
        tether(["pool", "umount", "home"], tether_env, check_rc=0)
    assert not os.path.ismount(view)
    assert "is not mounted" in tether(["pool", "umount", "home"], tether_env, check_rc=2).stderr


def test_after_a_reinstall_the_pool_is_imported_not_emptied(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """msync's workflow: the source folder is back, empty. The job refuses to empty the pool and
    names the import; the import brings back everything; the job's next pass sends nothing."""
    src, m = _pushed(tmp_path, tether_env)
    for p in sorted(src.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    proc = tether(["sync", "push"], tether_env, check_rc=1)
    assert "the source is empty" in proc.stdout + proc.stderr and "tether pool import home" in proc.stdout + proc.stderr
    assert len(_members([d for d in m if d.exists()])) == 25  # nothing of the pool was touched
    assert "not an empty folder" in tether(["pool", "import", "home", m[0]], tether_env, check_rc=2).stderr
    src.rmdir()
    out = tether(["pool", "import", "home", src], tether_env, check_rc=0).stdout
    assert "25 files" in out
    assert contents(src) == _members([d for d in m if d.exists()])
    again = tether(["sync", "push", "-v"], tether_env, check_rc=0)
    assert "0 files updated" in again.stdout


def test_a_bisync_between_a_folder_and_a_pool_places_what_it_sends(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """Both ways: new files on either side, an edit, a delete, a conflict (both versions kept);
    what reaches the pool is placed under the caps (by-path: a folder on one member)."""
    a = tmp_path / "a"
    _tree(a, {f"d{d}/f{i}.bin": 30 * KB for d in range(4) for i in range(5)})
    m = [tmp_path / f"m{i}" for i in range(3)]
    tether(["pool", "create", "two", *map(str, m), "--policy", "by-path", *(f"--cap={x}=700K" for x in m)],
           tether_env, check_rc=0)  # fmt: skip

    def view() -> dict[str, bytes]:
        return _members([d for d in m if d.exists()])

    tether(["bisync", a, "pool:two"], tether_env, check_rc=0)
    assert view() == contents(a) and all(_used(d) <= 700 * KB for d in m if d.exists())
    for d in range(4):  # by-path: each folder's files on one member (its folder may be on others, empty)
        assert sum(any((x / f"d{d}").glob("*")) for x in m if (x / f"d{d}").is_dir()) == 1
    holder = next(x for x in m if (x / "d0" / "f0.bin").exists())
    (holder / "d0" / "f0.bin").write_bytes(b"pool side\n")  # an edit on the pool's side (on its member)
    os.utime(holder / "d0" / "f0.bin", (2e9, 2e9))
    (a / "d1" / "f1.bin").write_bytes(b"local side\n")
    (a / "d2" / "f2.bin").unlink()
    (a / "new").mkdir()
    (a / "new" / "n.txt").write_text("new\n")
    (a / "d3" / "f3.bin").write_bytes(b"both, local\n")
    other = next(x for x in m if (x / "d3" / "f3.bin").exists())
    (other / "d3" / "f3.bin").write_bytes(b"both, pool side\n")
    doc = tether_json(["bisync", a, "pool:two", "--json"], tether_env, check_rc=0)
    assert doc["conflicts"] and doc["conflicts"][0]["path"] == "d3/f3.bin"
    assert view() == contents(a)
    assert (a / "d0" / "f0.bin").read_bytes() == b"pool side\n" and "d2/f2.bin" not in contents(a)
    kept = [c["copy"] for c in doc["conflicts"]]
    assert {(a / k).read_bytes() for k in kept} | {(a / "d3" / "f3.bin").read_bytes()} == {
        b"both, local\n", b"both, pool side\n"}  # fmt: skip
    assert all(_used(d) <= 700 * KB for d in m if d.exists())
    again = tether_json(["bisync", a, "pool:two", "--json"], tether_env, check_rc=0)
    assert again["plan"] == []


def test_a_member_down_for_30_s_during_a_continuous_mirror(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """rclone's sftp server as one member, stopped for 30 s: the job says so, the other members
    take the new files, nothing of the absent member's is sent again; back, the pool holds the
    source exactly, each file once (an edit made meanwhile wins, the old copy kept as a version)."""
    import time

    from tests.rig.live import status

    server = RcloneServer.start(tmp_path / "srv", "sftp")
    try:
        env = {**tether_env, **_renamed(server.env(), "far"), "RCLONE_CONFIG": str(server.config)}
        m = [tmp_path / "m0", tmp_path / "m1"]
        far = server.root / "pool"
        tether(["pool", "create", "p", *map(str, m), "far:pool", "--policy", "least-used"], env, check_rc=0)
        src = tmp_path / "src"
        _tree(src, {f"d{d}/f{i}.txt": 1000 + i for d in range(3) for i in range(10)})
        roots = [*m, far]

        write_job(env, "cloud", src, ["pool:p"], interval=0)
        with running(env, "cloud"):
            wait_for(lambda: _settled(roots, src), 60, "the first pass")
            on_far = sorted(contents(far))
            assert len(on_far) >= 5  # least-used gave the far member its share
            server.stop()
            down_at = time.monotonic()
            (src / "new").mkdir()
            for i in range(5):
                (src / "new" / f"n{i}.txt").write_text(f"made while far was away {i}\n")
            (src / on_far[0]).write_text("edited while its member was away\n")
            (src / on_far[1]).unlink()

            def said() -> bool:
                t = status(env, "cloud")["targets"][0]
                return "far:pool cannot be reached" in (t.get("last_error") or "")

            wait_for(said, 60, "the status to name the absent member")
            wait_for(lambda: all(any((r / "new" / f"n{i}.txt").exists() for r in m) for i in range(5)), 60,
                     "the other members to take the new files")  # fmt: skip
            pool = tether_json(["pool", "status", "p", "--json"], env, check_rc=1)
            assert [r["up"] for r in pool["members"]] == [True, True, False]
            assert sorted(contents(far)) == on_far  # nothing reached it, nothing of it was sent elsewhere again
            refused = tether(["pool", "import", "p", tmp_path / "back"], env, check_rc=1)
            assert "far:pool cannot be reached" in refused.stderr and "--partial" in refused.stderr
            tether(["pool", "import", "p", tmp_path / "back", "--partial"], env, check_rc=0)
            assert contents(tmp_path / "back") == _members(m)  # what the others hold
            assert not any((r / on_far[2]).exists() for r in m)
            wait_for(lambda: time.monotonic() - down_at >= 30, 40, "30 s of outage")
            server.restart()
            back = time.time()
            wait_for(lambda: _settled(roots, src), 120, "the pool to hold the source exactly")  # each file once

            def whole() -> bool:
                t = status(env, "cloud")["targets"][0]
                return bool(t["state"] == "idle" and (t["last_success"] or 0) > max(back, t["last_error_at"] or 0))

            wait_for(whole, 60, "a pass with every member")
    finally:
        server.stop()


def test_a_running_job_mounts_its_pool_and_stop_unmounts_it(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """The issue's case: 3 members capped at 40 MB, a 100 MB tree mirrored continuously: every file
    placed, no member over its cap, and the pool mounted by the job shows the tree byte for byte."""
    from tether.pools.mount import fuse_missing

    why = fuse_missing()
    if why is not None:
        pytest.skip(f"FUSE cannot be used here: {why}")
    src = tmp_path / "src"
    _tree(src, {f"d{d:02d}/f{i}.bin": 400 * KB + d * 1000 + i for d in range(25) for i in range(10)})  # ~100 MB
    m = [tmp_path / f"m{i}" for i in range(3)]
    view = tmp_path / "view"
    tether(["pool", "create", "big", *map(str, m), "--mount", str(view), *(f"--cap={x}=40M" for x in m)],
           tether_env, check_rc=0)  # fmt: skip
    write_job(tether_env, "fill", src, ["pool:big"], interval=0)
    with running(tether_env, "fill"):
        wait_for(lambda: os.path.ismount(view), 60, "the pool mounted by the job")
        wait_for(lambda: _settled(m, src), 120, "every file placed")
        assert all(_used(d) <= 40 * 2**20 for d in m)
        wait_for(lambda: contents(view) == contents(src), 60, "the mounted view to show the whole tree")
    assert not os.path.ismount(view)


def test_a_pool_whose_member_is_inside_the_source_or_the_replica_is_refused(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """A mirror into a pool one of whose members lies in its source would copy the pool into
    itself; a bisync beside one of its own members would sync a tree into itself."""
    src = tmp_path / "src"
    _tree(src, {"a.txt": 10})
    inner, outer = src / "cache", tmp_path / "m1"
    tether(["pool", "create", "loop", str(inner), str(outer)], tether_env, check_rc=0)
    proc = tether(["mirror", src, "pool:loop"], tether_env, check_rc=2)
    assert f"target pool:loop is inside the source {src} (its folder {inner})" in proc.stderr
    proc = tether(["bisync", outer, "pool:loop"], tether_env, check_rc=2)
    assert "is a member of pool:loop" in proc.stderr
    assert not inner.exists() and not (outer / "a.txt").exists()  # nothing written


def test_a_path_on_two_members_keeps_the_copy_the_index_names(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """What a member's outage leaves behind: the same path on two members (the old copy on the
    member that was away). The next write pass keeps the copy the placement index names and
    moves the other into its member's versions: nothing deleted, each path once."""
    import marshal
    import zlib

    m0, m1, src = tmp_path / "m0", tmp_path / "m1", tmp_path / "src"
    _tree(src, {"f.txt": 300, "g.txt": 10})
    (m0).mkdir()
    (m0 / "f.txt").write_bytes(b"stale copy\n")  # first in the union: what its listing shows
    (m1).mkdir()
    (m1 / "f.txt").write_bytes((src / "f.txt").read_bytes())
    tether(["pool", "create", "dup", str(m0), str(m1)], tether_env, check_rc=0)
    index = Path(tether_env["TETHER_HOME"]) / "state" / "pools" / "dup" / f"held-{zlib.crc32(b''):08x}"
    index.parent.mkdir(parents=True)
    st = (m1 / "f.txt").stat()
    index.write_bytes(marshal.dumps({"f.txt": (str(m1), st.st_size, st.st_mtime_ns)}))
    tether(["mirror", src, "pool:dup", "--force"], tether_env, check_rc=0)  # its first pass: a stranger's pool
    assert _members([m0, m1]) == contents(src)  # each path once, the source's bytes
    assert (m1 / "f.txt").read_bytes() == (src / "f.txt").read_bytes() and not (m0 / "f.txt").exists()
    kept = [p for p in (m0 / ".tether" / "versions").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [b"stale copy\n"]

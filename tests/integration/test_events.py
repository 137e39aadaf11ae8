"""Every job kind tells what it did in one stream, read back by `tether events`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.rig.live import running, status, wait_for, write_job, write_job_text
from tests.rig.run import tether
from tests.rig.sshd import ALIAS_DOWN, SshServer


def events(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    out = tether(["events", *args, "--json", "-n", "0"], env, check_rc=0).stdout
    return [json.loads(line) for line in out.splitlines()]


def _fill(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_every_job_kind_tells_its_passes_in_one_stream(tmp_path: Path, tether_env: dict[str, str]) -> None:
    home = Path(tether_env["TETHER_HOME"])
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"a.txt": "a", "d/b.txt": "b"})
    write_job(tether_env, "m", src, [str(dst)])
    tether(["sync", "m"], tether_env, check_rc=0)
    got = events(tether_env, "m")
    assert [e["kind"] for e in got] == ["pass-begin", "pass-end"]
    assert got[-1]["ok"] is True and got[-1]["counts"]["sent"] == 2 and got[-1]["target"] == str(dst)

    a, b = tmp_path / "a", tmp_path / "b"
    _fill(a, {"same.txt": "one", "doc.txt": "A edit\n"})
    _fill(b, {"same.txt": "one", "doc.txt": "B edit\n"})  # both sides changed, no state yet
    write_job_text(tether_env, "p", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    tether(["sync", "p"], tether_env, check_rc=0)
    kinds = [e["kind"] for e in events(tether_env, "p")]
    assert kinds[0] == "pass-begin" and "conflict" in kinds and kinds[-1] == "pass-end"
    conflict = next(e for e in events(tether_env, "p") if e["kind"] == "conflict")
    assert conflict["path"] == "doc.txt" and "keep-both" in conflict["detail"]

    w, bk = tmp_path / "work", tmp_path / "backup"
    _fill(w, {"photo.jpg": "jpeg"})
    bk.mkdir()
    (home / "config" / "locations.toml").write_text(f'[sets.photos]\nworking = ["{w}"]\nbackup = ["{bk}"]\n')
    tether(["backup", str(w), "--yes"], tether_env, check_rc=0)
    got = events(tether_env, "locations.photos")
    said = [(e["kind"], e.get("path", "")) for e in got]
    assert said == [("pass-begin", ""), ("sent", "photo.jpg"), ("pass-end", "")]

    everyone = events(tether_env)  # all jobs, in time order
    assert {e["job"] for e in everyone} == {"m", "p", "locations.photos"}
    assert [e["at"] for e in everyone] == sorted(e["at"] for e in everyone)
    assert {e["job"] for e in events(tether_env, "--kind", "conflict")} == {"p"}
    bad = tether(["events", "--kind", "copied"], tether_env, check_rc=2)
    assert "--kind 'copied' is no event kind" in bad.stderr
    missing = tether(["events", "nosuchjob"], tether_env, check_rc=2)
    assert "no job named 'nosuchjob'" in missing.stderr

    # status reads the same stream: the last pass of jobs run by hand or from cron, any kind
    status = {j["job"]: j for j in json.loads(tether(["status", "--json"], tether_env, check_rc=0).stdout)["jobs"]}
    assert [(p["target"], p["ok"], p["counts"]["sent"]) for p in status["m"]["last_passes"]] == [(str(dst), True, 2)]
    assert status["p"]["last_passes"][0]["counts"]["conflicts"] == 1
    shown_status = tether(["status", "p"], tether_env, check_rc=0).stdout
    assert "p: stopped" in shown_status and "last pass: ok" in shown_status and "1 conflicts" in shown_status


def test_a_running_mirror_says_what_it_sent_moved_and_deleted(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src, {"keep.txt": "k"})
    write_job(tether_env, "live", src, [str(dst)], delete="trash", interval=0)

    def said(kind: str, path: str) -> bool:
        return any(e["kind"] == kind and e.get("path", "") == path for e in events(tether_env, "live"))

    with running(tether_env, "live"):
        wait_for(lambda: said("pass-end", ""), 30, "the first full pass's end")
        (src / "new.txt").write_text("new")
        wait_for(lambda: said("sent", "new.txt"), 30, "the created file")
        (src / "new.txt").rename(src / "renamed.txt")
        wait_for(lambda: said("moved", "renamed.txt"), 30, "the rename")
        (src / "renamed.txt").unlink()
        wait_for(lambda: said("deleted", "renamed.txt"), 30, "the delete")
    got = events(tether_env, "live")
    moved = next(e for e in got if e["kind"] == "moved")
    assert moved["detail"] == "from new.txt"
    deleted = next(e for e in got if e["kind"] == "deleted")
    assert deleted["detail"] == "kept in .tether/versions" and deleted["target"] == str(dst)


def test_a_target_that_is_down_is_said_once_however_often_it_is_retried(
    tmp_path: Path, sshd: SshServer, tether_ssh_env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    _fill(src, {"a.txt": "a"})
    write_job(tether_ssh_env, "far", src, [f"{ALIAS_DOWN}:{tmp_path}/dst"], interval=0)

    def retries() -> int:
        return tether(["log", "far", "-n", "200"], tether_ssh_env, check_rc=0).stdout.count("retry in")

    def down() -> bool:  # between two attempts: each one says "syncing" while it tries
        return bool(status(tether_ssh_env, "far")["targets"][0]["state"] == "down")

    with running(tether_ssh_env, "far"):
        wait_for(lambda: retries() >= 3, 60, "three attempts at the target")
        wait_for(down, 30, "the target marked down")
    downs = [e for e in events(tether_ssh_env, "far") if e["kind"] in ("down", "error")]
    assert [e["kind"] for e in downs] == ["down"], downs
    assert "refused" in downs[0]["detail"] or "connect" in downs[0]["detail"], downs


def test_sync_all_runs_every_job_and_lists_the_failed_ones(tmp_path: Path, tether_env: dict[str, str]) -> None:
    """For cron: one job's failure does not stop the others; exit 1 naming it."""
    a, b = tmp_path / "a", tmp_path / "b"
    _fill(a, {"f.txt": "a"})
    _fill(b, {"g.txt": "b"})
    write_job(tether_env, "one", a, [str(tmp_path / "a-copy")])
    write_job(tether_env, "three", b, [str(tmp_path / "b-copy")])
    write_job_text(tether_env, "two", 'source = "/nonexistent/source"\ntargets = ["/tmp/never"]\n')
    proc = tether(["sync", "--all"], tether_env, check_rc=1)
    assert (tmp_path / "a-copy" / "f.txt").exists() and (tmp_path / "b-copy" / "g.txt").exists()
    assert "3 jobs: 2 ok, failed: two (exit" in proc.stdout
    assert "two" in proc.stderr and "/nonexistent/source" in proc.stderr
    assert "NAME or --all" in tether(["sync"], tether_env, check_rc=2).stderr
    assert "NAME or --all" in tether(["sync", "one", "--all"], tether_env, check_rc=2).stderr
    assert "per job" in tether(["sync", "--all", "--json"], tether_env, check_rc=2).stderr

"""before/after around every job kind, as users write them: what they are told, where they
run (here or on an ssh target), and what a failure does (skip the pass or go on; run `after`
after an error or not).  Each command writes its TETHER_* environment to a file outside the
replicas, so the mirror's exactness is checked beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.rig.compare import assert_same_tree
from tests.rig.live import running, wait_for, write_job_text
from tests.rig.run import tether
from tests.rig.sshd import SshServer

# Appends one JSON line of the command's TETHER_* variables (and its working directory) to a file.
RECORD = (
    "import json, os, sys; env = {k: v for k, v in os.environ.items() if k.startswith('TETHER_')}; "
    "env['cwd'] = os.getcwd(); open(sys.argv[1], 'a').write(json.dumps(env) + '\\n')"
)


def record(path: Path) -> str:
    return json.dumps([sys.executable, "-c", RECORD, str(path)])


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def tree(root: Path, files: int = 3) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i}.txt").write_text(f"{i}\n")
    return root


def test_a_mirror_jobs_commands_are_told_the_run_and_its_outcome(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst, log = tree(tmp_path / "src"), tmp_path / "dst", tmp_path / "hooks.jsonl"
    write_job_text(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}"]\nbefore = {record(log)}\n'
                   f"after = {record(log)}\n")  # fmt: skip
    tether(["sync", "web"], tether_env, check_rc=0)
    before, after = lines(log)
    assert (before["TETHER_JOB"], before["TETHER_KIND"], before["TETHER_EVENT"]) == ("web", "mirror", "before")
    assert (before["TETHER_STATUS"], before["TETHER_SOURCE"], before["TETHER_TARGETS"]) == (
        "starting",
        str(src),
        str(dst),
    )
    assert (after["TETHER_EVENT"], after["TETHER_STATUS"], after["TETHER_SENT"], after["TETHER_ERRORS"]) == (
        "after", "ok", "3", "0",
    )  # fmt: skip
    assert_same_tree(src, dst)


def test_before_fails_continue_runs_the_pass_and_after_on_error_false_skips_after(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    src, dst, log = tree(tmp_path / "src"), tmp_path / "dst", tmp_path / "hooks.jsonl"
    job = f'source = "{src}"\ntargets = ["{dst}"]\nafter = {record(log)}\n'
    write_job_text(tether_env, "web", job + 'before = ["false"]\nbefore_fails = "continue"\n')
    proc = tether(["sync", "web"], tether_env, check_rc=0)
    assert "before command 'false' failed (exit 1)" in proc.stderr and "the pass runs anyway" in proc.stderr
    assert_same_tree(src, dst)
    assert [x["TETHER_STATUS"] for x in lines(log)] == ["ok"]

    write_job_text(tether_env, "web", job + 'before = ["false"]\n')  # the default: skip the pass
    (src / "new.txt").write_text("new\n")
    proc = tether(["sync", "web"], tether_env, check_rc=1)
    assert "before command 'false' failed" in proc.stderr and not (dst / "new.txt").exists()
    assert [x["TETHER_STATUS"] for x in lines(log)] == ["ok"]  # no pass, no after

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder\n")  # a target below a file: that target's pass fails
    write_job_text(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}", "{blocked}/t"]\n'
                   f"after = {record(log)}\nafter_on_error = false\n")  # fmt: skip
    tether(["sync", "web"], tether_env, check_rc=1)
    assert len(lines(log)) == 1, "after ran after a failed pass despite after_on_error = false"
    write_job_text(tether_env, "web", job + "after_on_error = false\n")
    tether(["sync", "web"], tether_env, check_rc=0)
    assert [x["TETHER_STATUS"] for x in lines(log)] == ["ok", "ok"]


def test_commands_on_targets_run_in_each_ssh_targets_root(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer
) -> None:
    src, log = tree(tmp_path / "src"), tmp_path / "hooks.jsonl"
    near, far = tmp_path / "near", tmp_path / "far"
    far.mkdir()
    near.mkdir()
    write_job_text(tether_ssh_env, "web", f'source = "{src}"\ntargets = ["{near}", "{sshd.alias}:{far}"]\n'
                   f'commands_on = "targets"\nbefore = {record(log)}\nafter = {record(log)}\n')  # fmt: skip
    tether(["sync", "web"], tether_ssh_env, check_rc=0)
    got = lines(log)
    assert sorted((x["TETHER_EVENT"], x["cwd"]) for x in got) == sorted(
        [("before", str(near)), ("before", str(far)), ("after", str(near)), ("after", str(far))]
    )
    assert {x["TETHER_TARGET"] for x in got} == {str(near), f"{sshd.alias}:{far}"}
    assert_same_tree(src, near)
    assert_same_tree(src, far)

    # a before that fails on one target skips that target only
    fail_far = json.dumps(["sh", "-c", f'test "$PWD" != "{far}"'])
    write_job_text(tether_ssh_env, "web", f'source = "{src}"\ntargets = ["{near}", "{sshd.alias}:{far}"]\n'
                   f'commands_on = "targets"\nbefore = {fail_far}\n')  # fmt: skip
    (src / "new.txt").write_text("new\n")
    proc = tether(["sync", "web"], tether_ssh_env, check_rc=1)
    assert "before command 'sh' failed (exit 1)" in proc.stderr
    assert (near / "new.txt").exists() and not (far / "new.txt").exists()


def test_a_continuous_mirror_runs_them_around_each_full_pass(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst, log = tree(tmp_path / "src"), tmp_path / "dst", tmp_path / "hooks.jsonl"
    write_job_text(tether_env, "live", f'source = "{src}"\ntargets = ["{dst}"]\nbefore = {record(log)}\n'
                   f"after = {record(log)}\n")  # fmt: skip
    with running(tether_env, "live"):
        wait_for(lambda: len(lines(log)) >= 2, what="before and after around the first full pass")
    before, after = lines(log)[:2]
    assert (before["TETHER_EVENT"], before["TETHER_TARGET"], before["TETHER_KIND"]) == ("before", str(dst), "mirror")
    assert (after["TETHER_EVENT"], after["TETHER_STATUS"], after["TETHER_SENT"]) == ("after", "ok", "3")


def test_a_bisync_jobs_commands_are_told_both_replicas_and_the_counts(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer
) -> None:
    a, b, log = tree(tmp_path / "a"), tmp_path / "b", tmp_path / "hooks.jsonl"
    b.mkdir()
    write_job_text(tether_ssh_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{sshd.alias}:{b}"\n'
                   f'commands_on = "path2"\nbefore = {record(log)}\nafter = {record(log)}\n')  # fmt: skip
    tether(["sync", "notes"], tether_ssh_env, check_rc=0)
    before, after = lines(log)
    assert before["cwd"] == after["cwd"] == str(b)  # run on path2's host, in its root
    assert (before["TETHER_KIND"], before["TETHER_PATH1"], before["TETHER_PATH2"]) == (
        "bisync", str(a), f"{sshd.alias}:{b}",
    )  # fmt: skip
    assert (after["TETHER_STATUS"], after["TETHER_SENT"], after["TETHER_CONFLICTS"]) == ("ok", "3", "0")

    write_job_text(tether_ssh_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{sshd.alias}:{b}"\n'
                   'before = ["false"]\nbefore_fails = "continue"\n')  # fmt: skip
    (a / "more.txt").write_text("more\n")
    proc = tether(["sync", "notes"], tether_ssh_env, check_rc=0)
    assert "the pass runs anyway" in proc.stderr + proc.stdout and (b / "more.txt").exists()


def test_a_locations_set_runs_them_around_each_destination(tmp_path: Path, tether_env: dict[str, str]) -> None:
    w, b, log = tree(tmp_path / "w"), tmp_path / "b", tmp_path / "hooks.jsonl"
    b.mkdir()
    config = Path(tether_env["TETHER_HOME"]) / "config" / "locations.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    head = f'[sets.photos]\nworking = ["{w}"]\nbackup = ["{b}"]\n'
    config.write_text(head + f"before = {record(log)}\nafter = {record(log)}\n")
    tether(["backup", "--yes", w], tether_env, check_rc=0)
    before, after = lines(log)
    assert (before["TETHER_JOB"], before["TETHER_KIND"], before["TETHER_ACTION"]) == (
        "locations.photos", "locations", "backup",
    )  # fmt: skip
    assert (before["TETHER_SOURCE"], before["TETHER_TARGET"]) == (str(w), str(b))
    assert (after["TETHER_STATUS"], after["TETHER_SENT"]) == ("ok", "3")
    assert_same_tree(w, b)

    config.write_text(head + 'before = ["false"]\n')
    (w / "new.txt").write_text("new\n")
    proc = tether(["backup", "--yes", w], tether_env, check_rc=1)
    assert "before command 'false' failed (exit 1)" in proc.stderr and not (b / "new.txt").exists()

    config.write_text(head + "before = 'false'\n")
    proc = tether(["backup", "--yes", w], tether_env, check_rc=2)
    assert f"{config}:4: sets.photos.before: must be a command as a list of strings" in proc.stderr

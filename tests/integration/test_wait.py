"""`tether wait NAME`: once it returns 0, the targets hold what the source held when it was
called, checked at once (no polling after it: the wait is the point).  A target that cannot
catch up makes it fail, naming the target; a job not running is said."""

from __future__ import annotations

import os
from pathlib import Path

from tests.rig.compare import assert_same_tree
from tests.rig.live import running, small_pair, write_job_text
from tests.rig.run import tether, tether_json
from tests.rig.sshd import ALIAS_DOWN, SshServer
from tests.rig.trees import make_tree


def churn(src: Path, round_: int) -> None:
    """What a deploy does: many new files, an edit, a rename of a folder, a delete."""
    d = src / f"batch{round_}"
    d.mkdir()
    for i in range(300):
        (d / f"f{i}.txt").write_text(f"{round_}-{i}\n")
    (src / "edited.txt").write_text(f"round {round_}\n")
    if round_:
        os.rename(src / f"batch{round_ - 1}", src / f"moved{round_ - 1}")
        (src / f"moved{round_ - 1}" / "f0.txt").unlink()


def test_after_wait_every_target_holds_the_source(
    tmp_path: Path, tether_ssh_env: dict[str, str], sshd: SshServer
) -> None:
    src, near, far = tmp_path / "src", tmp_path / "near", tmp_path / "far"
    make_tree(src, 200, seed=41, hostile=True)
    write_job_text(tether_ssh_env, "site", f'source = "{src}"\ntargets = ["{near}", "{sshd.alias}:{far}"]\n')
    with running(tether_ssh_env, "site"):
        for r in range(4):
            churn(src, r)
            tether(["wait", "site", "--timeout", "120"], tether_ssh_env, check_rc=0)
            assert_same_tree(src, near)
            assert_same_tree(src, far)
        doc = tether_json(["wait", "site"], tether_ssh_env, check_rc=0)  # nothing changed: at once
        assert doc["caught_up"] is True and doc["behind"] == []


def test_a_wait_asked_while_the_first_pass_runs_is_answered_after_it(
    tmp_path: Path, tether_env: dict[str, str]
) -> None:
    """Nothing changed since the job started, so no change is queued: the first full pass is what
    brings the target level, and the wait is answered only once it has ended (it was answered at
    once, the target half-written: found by the scorecard, whose snapshot met rsync's temp files)."""
    src, near = tmp_path / "src", tmp_path / "near"
    make_tree(src, 300, seed=43, hostile=False)
    write_job_text(tether_env, "slow", f'source = "{src}"\ntargets = ["{near}"]\nbefore = ["sleep", "2"]\n')
    with running(tether_env, "slow"):
        tether(["wait", "slow", "--timeout", "120"], tether_env, check_rc=0)
        assert_same_tree(src, near)


def test_a_target_that_cannot_catch_up_fails_the_wait_naming_it(tmp_path: Path, tether_ssh_env: dict[str, str]) -> None:
    src, near = small_pair(tmp_path)
    write_job_text(tether_ssh_env, "site", f'source = "{src}"\ntargets = ["{near}", "{ALIAS_DOWN}:/srv/x"]\n')
    with running(tether_ssh_env, "site"):
        (src / "new.txt").write_text("new\n")
        proc = tether(["wait", "site", "--timeout", "3"], tether_ssh_env, check_rc=1)
    assert "site: not caught up within 3 s" in proc.stderr
    assert f"behind: {ALIAS_DOWN}:/srv/x" in proc.stderr and str(near) not in proc.stderr
    assert (near / "new.txt").read_text() == "new\n"


def test_a_continuous_bisync_job_answers_after_a_pass_begun_later(tmp_path: Path, tether_env: dict[str, str]) -> None:
    a, b = small_pair(tmp_path)
    write_job_text(tether_env, "notes", f'kind = "bisync"\npath1 = "{a}"\npath2 = "{b}"\n')
    with running(tether_env, "notes"):
        for r in range(3):
            (a / f"from-a-{r}.txt").write_text(f"{r}\n")
            (b / f"from-b-{r}.txt").write_text(f"{r}\n")
            tether(["wait", "notes", "--timeout", "120"], tether_env, check_rc=0)
            assert_same_tree(a, b)


def test_waiting_on_a_job_that_is_not_running_or_not_there(tmp_path: Path, tether_env: dict[str, str]) -> None:
    src, dst = small_pair(tmp_path)
    write_job_text(tether_env, "idle", f'source = "{src}"\ntargets = ["{dst}"]\n')
    proc = tether(["wait", "idle"], tether_env, check_rc=1)
    assert "job idle is not running" in proc.stderr and "tether start idle" in proc.stderr
    assert "no job named" in tether(["wait", "nope"], tether_env, check_rc=2).stderr

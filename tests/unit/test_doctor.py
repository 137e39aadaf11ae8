"""The doctor's rules as data (version texts, thresholds, the report), and which checks a job
needs, planned from real job files: nothing here runs a probe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tether.doctor import rules
from tether.doctor.plan import Needs, checks_for, machine_checks, needs_of
from tether.doctor.rules import Finding, Result
from tether.jobs import load_job
from tether.ssh import SshOptions

GNU_RSYNC = """rsync  version 3.2.7  protocol version 31
Copyright (C) 1996-2022 by Andrew Tridgell, Wayne Davison, and others.
Web site: https://rsync.samba.org/
"""


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (GNU_RSYNC, (3, 2, 7)),
        ("rsync  version v3.5.0  protocol version 32\n", (3, 5, 0)),
        ("rsync  version 3.1.3  protocol version 31\n", (3, 1, 3)),
        ("openrsync: protocol version 29\nrsync version 2.6.9 compatible\n", (2, 6, 9)),  # macOS: too old
        ("bash: line 1: rsync: command not found\n", None),
        ("", None),
    ],
)
def test_rsync_version_is_read_from_its_version_line(text: str, version: tuple[int, ...] | None) -> None:
    assert rules.rsync_version(text) == version


def test_the_rsync_rule_holds_each_side_to_what_tether_passes_it() -> None:
    ok = rules.rsync_rule("h", (3, 2, 3), "", rules.RSYNC_FAR_MIN, "on h")
    assert ok == Finding(True, "h: rsync 3.2.3")
    old = rules.rsync_rule("here", (3, 2, 5), "", rules.RSYNC_LOCAL_MIN, "here")
    assert not old.ok and "3.2.5 is too old (tether needs 3.2.6 or newer)" in old.detail
    assert old.fix == "install rsync 3.2.6 or newer here"
    gone = rules.rsync_rule("h", None, "bash: rsync: command not found\n", rules.RSYNC_FAR_MIN, "on h")
    assert not gone.ok and "command not found" in gone.detail and gone.fix == "install rsync 3.2.3+ on h"


def test_the_far_python_is_read_past_login_noise_and_held_to_3_8() -> None:
    assert rules.python_version("Welcome to host\n3.11.2\n") == (3, 11, 2)
    assert rules.python_version("python3: not found") is None
    assert rules.python_rule("h", "auto", (3, 8, 0), "").ok
    old = rules.python_rule("h", "python3", (3, 6, 9), "")
    assert not old.ok and "3.6.9" in old.detail and old.fix is not None and "python key" in old.fix
    none = rules.python_rule("h", "auto", None, "sh: 1: exec: python3: not found")
    assert not none.ok and "/usr/bin/python3, else PATH's" in none.detail
    assert none.fix is not None and none.fix.startswith("install python3 3.8 or newer on h")


def test_rclone_version_and_its_remote() -> None:
    assert rules.rclone_version("rclone v1.75.2\n- os/version: debian 12\n") == (1, 75, 2)
    assert rules.rclone_version("rclone v1.60.1-DEV\n") == (1, 60, 1)
    assert not rules.rclone_rule("/usr/bin/rclone", (1, 60, 1), "").ok
    assert rules.rclone_rule("rclone", (1, 75, 0), "").ok
    assert rules.remote_rule("Cloud", ["cloud:", "other:"], "c.conf").ok  # rclone's names ignore case
    missing = rules.remote_rule("gone", ["cloud:"], "c.conf")
    assert not missing.ok and missing.fix is not None and "rclone config" in missing.fix


def test_the_watch_rule_takes_the_smaller_limit_and_keeps_a_margin() -> None:
    assert rules.watch_margin(10) == 100 and rules.watch_margin(5000) == 500
    assert rules.watch_rule([("/s", 900)], 1000, None).ok  # 900 + 100 spare
    tight = rules.watch_rule([("/s", 901)], 1000, None)
    assert not tight.ok and "fs.inotify.max_user_watches is 1000" in tight.detail
    assert tight.fix == (
        "sysctl -w fs.inotify.max_user_watches=65536; to keep it, put fs.inotify.max_user_watches=65536 "
        "in /etc/sysctl.d/90-tether.conf"
    )
    ns = rules.watch_rule([("/a", 30), ("/b", 30)], 200_000, 50)  # two trees of one job add up
    assert not ns.ok and "needs 60 inotify watches" in ns.detail and "allows 50" in ns.detail
    assert ns.fix is not None and "user.max_inotify_watches=65536" in ns.fix
    assert rules.watch_want(100_000) == 262_144
    assert rules.watch_rule([("/s", 10)], None, None).ok  # no /proc/sys: nothing to hold it against
    fan = rules.watch_rule([("/s", 901)], 1000, None, None)  # past it, where fanotify can watch
    assert fan.ok and "fanotify" in fan.detail


def test_free_space_fails_under_1_percent_or_100_mib() -> None:
    mib, gib = 1 << 20, 1 << 30
    assert rules.free_rule("/t", 100 * mib, 2 * gib).ok
    assert not rules.free_rule("/t", 100 * mib - 1, 2 * gib).ok  # the 100 MiB floor
    assert rules.free_rule("/t", 20 * gib, 1000 * gib).ok
    low = rules.free_rule("/t", 9 * gib, 1000 * gib)  # 0.9% of a big disk
    assert not low.ok and "(0.9%)" in low.detail and low.fix is not None and "10.0 GiB" in low.fix


def test_clock_skew_is_corrected_by_half_the_round_trip() -> None:
    assert rules.skew_rule("h", 1001.0, 1000.0, 1002.0).ok  # read at the middle: no skew at all
    assert "+0.000 s" in rules.skew_rule("h", 1001.0, 1000.0, 1002.0).detail
    late = rules.skew_rule("h", 1003.6, 1000.0, 1001.0)
    assert not late.ok and "+3.100 s" in late.detail and late.fix is not None and "timedatectl" in late.fix
    assert rules.skew_rule("h", 998.6, 1000.0, 1000.2).ok  # -1.5 s is within 2 s
    assert rules.parse_clock("1700000000.123456789\n") == pytest.approx(1700000000.123456789)
    assert rules.parse_clock("1700000000.N\n") == 1700000000.0  # busybox: no %N
    assert rules.parse_clock("date: bad format") is None


def test_df_output_and_the_folders_tried() -> None:
    df = "Filesystem     1024-blocks    Used Available Capacity Mounted on\n/dev/vda1  1000 400 600 40% /\n"
    assert rules.parse_df(df) == (1000 * 1024, 600 * 1024)
    assert rules.parse_df("df: /x: No such file or directory\n") is None
    assert rules.ancestors("/srv/a/b") == ["/srv/a/b", "/srv/a", "/srv", "/"]
    assert rules.ancestors("data/x") == ["data/x", "data", "."]  # relative: from the ssh home
    assert rules.ancestors("") == ["."]


def test_the_report_puts_each_fix_under_its_failure() -> None:
    results = [
        Result("rsync", None, Finding(True, "this machine: rsync 3.2.7")),
        Result("ssh", "web", Finding(False, "h: connection refused", "check sshd")),
    ]
    text = rules.report_text(results, {"web": "job web (mirror /a -> h:/b)"})
    assert text.splitlines() == [
        "this machine:",
        "  ok    rsync  this machine: rsync 3.2.7",
        "job web (mirror /a -> h:/b):",
        "  FAIL  ssh    h: connection refused",
        "               fix: check sshd",
        "2 checks, 1 failed",
    ]
    doc = rules.report_json(results)
    assert doc["ok"] is False
    assert doc["checks"][1] == {"check": "ssh", "job": "web", "ok": False, "detail": "h: connection refused",
                                "fix": "check sshd"}  # fmt: skip


SSH = SshOptions("/tmp/sock")


def planned(tmp_path: Path, body: str) -> list[str]:
    f = tmp_path / "job.toml"
    f.write_text(body)
    return [c.name for c in checks_for(needs_of(load_job(f, "job"), SSH))]


def test_a_local_mirror_needs_rsync_watches_and_room(tmp_path: Path) -> None:
    assert planned(tmp_path, 'source = "/s"\ntargets = ["/t1", "/t2"]\n') == [
        "rsync", "inotify", "free-space", "free-space",
    ]  # fmt: skip


def test_an_ssh_target_with_preserve_needs_the_far_side_checked(tmp_path: Path) -> None:
    body = 'source = "/s"\ntargets = ["h:/t", "h:/u"]\npreserve = ["acl", "owner"]\n'
    assert planned(tmp_path, body) == [
        "rsync", "ssh", "rsync", "python", "inotify", "free-space", "acl-tools", "owner", "free-space",
    ]  # fmt: skip


def test_a_bisync_with_an_ssh_replica_needs_the_clocks_compared(tmp_path: Path) -> None:
    body = 'kind = "bisync"\npath1 = "/a"\npath2 = "h:/b"\n'
    assert planned(tmp_path, body) == ["rsync", "ssh", "rsync", "python", "clock", "inotify", "free-space",
                                       "free-space"]  # fmt: skip
    local = planned(tmp_path, 'kind = "bisync"\npath1 = "/a"\npath2 = "/b"\n')
    assert "clock" not in local and local.count("inotify") == 1  # both trees in one count


def test_an_rclone_target_needs_rclone_and_its_remote_not_rsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text("[cloud]\ntype = local\n")
    monkeypatch.setenv("RCLONE_CONFIG", str(conf))
    assert planned(tmp_path, 'source = "/s"\ntargets = ["cloud:backup"]\n') == ["inotify", "rclone", "rclone-remote"]


def test_chown_keys_through_sudo_accept_sudo_and_preserve_does_not(tmp_path: Path) -> None:
    f = tmp_path / "job.toml"
    f.write_text('source = "/s"\ntargets = ["h:/t"]\nsync_owner = "www"\nsudo = true\n')
    owner = next(c for c in checks_for(needs_of(load_job(f, "j"), SSH)) if c.name == "owner")
    assert owner.key[-1] is True  # sudo -n will do
    f.write_text('source = "/s"\ntargets = ["h:/t"]\nsync_owner = "www"\nsudo = true\npreserve = ["group"]\n')
    owner = next(c for c in checks_for(needs_of(load_job(f, "j"), SSH)) if c.name == "owner")
    assert owner.key[-1] is False  # rsync --super runs as the job's user: root only


def test_a_job_that_mounts_gets_the_fuse_checks(tmp_path: Path) -> None:
    f = tmp_path / "job.toml"
    f.write_text('source = "/s"\ntargets = ["/t"]\n')
    needs: Needs = needs_of(load_job(f, "j"), SSH)
    assert "fuse" not in [c.name for c in checks_for(needs)]
    mounting = [c.name for c in checks_for(dataclasses.replace(needs, mounts=True))]
    assert mounting[-2:] == ["fuse", "fusermount"]
    assert [c.name for c in machine_checks(fuse=True)] == ["rsync", "fuse", "fusermount"]


def test_a_jobs_ssh_config_is_the_one_its_probes_use(tmp_path: Path) -> None:
    f = tmp_path / "job.toml"
    f.write_text('source = "/s"\ntargets = ["h:/t"]\nssh_config = "/etc/tether/ssh_config"\n')
    ssh = next(c for c in checks_for(needs_of(load_job(f, "j"), SSH)) if c.name == "ssh")
    assert ssh.group == ("/etc/tether/ssh_config", "h")

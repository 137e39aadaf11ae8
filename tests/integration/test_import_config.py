"""`tether import-config` as someone leaving MiMi, osync or inosync would use it: their sample
config pointed at this test's folders (and at the test sshd where the tool used ssh), imported,
then the job run for real and the result checked on disk."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.rig.alerts import smtp_server
from tests.rig.kept import kept
from tests.rig.live import running, wait_for
from tests.rig.run import contents, tether
from tests.rig.sshd import SshServer

DATA = Path(__file__).resolve().parent.parent / "data" / "import"


def sample(name: str, dest: Path, **values: str) -> Path:
    """The sample config with KEY=... (or `key = ...` for Python) lines given new values."""
    text = (DATA / name).read_text()
    for key, value in values.items():
        shell = rf"(?m)^{re.escape(key)}=.*$"
        if re.search(shell, text):
            line = f"{key}={json.dumps(value)}"
            text = re.sub(shell, lambda _m: line, text)  # noqa: B023 (used at once)
        else:
            line = f"{key} = {value}"
            text = re.sub(rf"(?ms)^{re.escape(key)} = (\[.*?\]|[^\n]*)$", lambda _m: line, text)  # noqa: B023
    dest.write_text(text)
    return dest


def job_text(env: dict[str, str], name: str) -> dict[str, object]:
    return tomllib.loads((Path(env["TETHER_HOME"]) / "config" / "jobs" / f"{name}.toml").read_text())


def jobs_dir(env: dict[str, str]) -> Path:
    return Path(env["TETHER_HOME"]) / "config" / "jobs"


def keys_of(out: str, heading: str) -> set[str]:
    """The keys listed under `heading` in the human output."""
    section = out.split(heading, 1)[1] if heading in out else ""
    keys: set[str] = set()
    for line in section.splitlines()[1:]:
        if not line.startswith("  "):
            break
        keys.add(line.split()[0])
    return keys


# -- MiMi ----------------------------------------------------------------------------------


def test_mimi_sample_becomes_a_mirror_job_that_pushes_over_ssh_with_acl_and_owners(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    if not shutil.which("setfacl") or not shutil.which("sudo"):
        pytest.skip("setfacl (acl) and sudo are needed for MiMi's permissions and owners")
    src, dst = tmp_path / "devops", tmp_path / "remote" / "devops"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "deploy.sh").write_text("#!/bin/sh\necho deploy\n")
    (src / "README").write_text("scripts\n")
    dst.parent.mkdir()
    conf = sample(
        "mimi.conf", tmp_path / "devops.conf", source_dir=str(src), target_dir=str(dst),
        ssh_connection_string=sshd.alias, permissions="user::rwx,group::rwx,other::--- -m u:nobody:rwx",
        sync_owner="nobody", final_owner="root:root",
    )  # fmt: skip
    proc = tether(["import-config", conf], tether_ssh_env, check_rc=0)
    assert "wrote" in proc.stdout and "dropped" not in proc.stdout
    job = job_text(tether_ssh_env, "devops")
    assert job["targets"] == [f"{sshd.alias}:{dst}"] and job["interval"] == 5 and job["sudo"] is True
    assert job["permissions"] == "user::rwx,group::rwx,other::---,u:nobody:rwx"
    tether(["check", "devops"], tether_ssh_env, check_rc=0)

    tether(["sync", "devops"], tether_ssh_env, check_rc=0)
    assert contents(dst) == contents(src)

    nobody = pwd.getpwnam("nobody").pw_uid
    with running(tether_ssh_env, "devops"):
        wait_for(lambda: dst.stat().st_uid == nobody, 60, "sync_owner on the target")
        (src / "new.txt").write_text("pushed as it happens")
        wait_for(lambda: (dst / "new.txt").exists() and (dst / "new.txt").stat().st_uid == nobody, 60, "new file")
        acl = subprocess.run(["getfacl", "-p", str(dst / "new.txt")], capture_output=True, text=True).stdout
        assert "user:nobody:rwx" in acl and "other::---" in acl
    wait_for(lambda: (dst / "new.txt").stat().st_uid == 0, 60, "final_owner once the job stopped")
    assert contents(dst) == contents(src)


# -- osync ---------------------------------------------------------------------------------


def test_osync_sample_becomes_a_bisync_job_to_ssh_that_syncs_both_ways(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    one, two = tmp_path / "dir1", tmp_path / "dir2"
    for d in (one, two):
        d.mkdir()
    (one / "from-initiator.txt").write_text("1")
    (two / "from-target.txt").write_text("2")
    (one / "both.txt").write_text("initiator version")
    (two / "tmp").mkdir()
    (two / "tmp" / "scratch").write_text("excluded: stays on the target")
    (one / ".osync_workdir" / "state").mkdir(parents=True)
    (one / ".osync_workdir" / "state" / "last").write_text("osync's own")
    after = tmp_path / "after.txt"
    mail = contextlib.ExitStack()
    port, box = mail.enter_context(smtp_server())  # osync mailed through it: tether will too
    conf = sample(
        "osync.conf", tmp_path / "sync.conf", INITIATOR_SYNC_DIR=str(one),
        TARGET_SYNC_DIR=f"ssh://{sshd.user}@{sshd.alias}:22/{two}", LOCAL_RUN_AFTER_CMD=f"echo synced > {after}",
        CONFLICT_PREVALANCE="target", SMTP_SERVER="127.0.0.1", SMTP_PORT=str(port),
    )  # fmt: skip
    proc = tether(["import-config", conf, "--name", "notes"], tether_ssh_env, check_rc=1)
    dropped = keys_of(proc.stdout, "dropped")
    assert "_REMOTE_TOKEN" in dropped and "PRESERVE_OWNER" not in dropped
    assert {"DESTINATION_MAILS", "MINIMUM_SPACE", "SMTP_SERVER"} <= keys_of(proc.stdout, "translated")
    assert {"CONFLICT_PREVALANCE", "SOFT_DELETE_DAYS", "HARD_MAX_EXEC_TIME"} <= keys_of(proc.stdout, "translated")
    assert "no equivalent" in proc.stderr and "Traceback" not in proc.stderr
    job = job_text(tether_ssh_env, "notes")
    assert job["path2"] == f"{sshd.user}@{sshd.alias}:{two}" and job["conflict"] == "newer"
    assert job["after"] == ["sh", "-c", f"echo synced > {after}"]
    assert (job["max_time_soft"], job["max_time_hard"], job["trash_days"]) == (7200, 10600, 30)
    assert job["preserve"] == ["owner", "group"]  # PRESERVE_OWNER/GROUP=true, PRESERVE_ACL/XATTR=false
    assert job["alerts"] == {"min_free": 10240 * 1024, "email": {
        "host": "127.0.0.1", "security": "none", "to": ["your@alert.tld"], "port": port,
        "from": "alert@your.system.tld"}}  # fmt: skip

    tether(["sync", "notes"], tether_ssh_env, check_rc=0)
    assert (two / "from-initiator.txt").read_text() == "1" and (one / "from-target.txt").read_text() == "2"
    assert (two / "both.txt").read_text() == "initiator version"
    assert not (one / "tmp").exists() and not (two / ".osync_workdir").exists()
    assert after.read_text() == "synced\n"

    # both sides change one file: the newer wins (osync's rsync -u), the other is kept as a backup
    (one / "both.txt").write_text("older edit on the initiator")
    (two / "both.txt").write_text("newer edit on the target")
    now = time.time()
    os.utime(one / "both.txt", (now - 60, now - 60))
    (one / "from-initiator.txt").unlink()
    tether(["sync", "notes"], tether_ssh_env, check_rc=0)
    assert (one / "both.txt").read_text() == "newer edit on the target"
    backups = [p.read_text() for p in kept(one, "both.txt")]
    assert "older edit on the initiator" in backups
    assert not (two / "from-initiator.txt").exists()
    assert len(kept(two, "from-initiator.txt", "deleted")) == 1
    with mail:  # the conflict was mailed, as osync's DESTINATION_MAILS asked, before sync returned
        assert [str(m["To"]) for m in box.messages if "conflict" in str(m["Subject"])] == ["your@alert.tld"]


# -- inosync -------------------------------------------------------------------------------


def test_inosync_sample_becomes_a_mirror_job_with_one_ssh_target_per_node(
    tmp_path: Path, sshd: SshServer, tether_ssh_env
) -> None:
    src, dst = tmp_path / "www", tmp_path / "lib-www"
    (src / "a" / "6").mkdir(parents=True)
    (src / "a" / "6" / "thumb.jpg").write_text("excluded by */6/*")
    (src / "6").mkdir()
    (src / "6" / "top.jpg").write_text("kept: */6/* needs a folder above 6")
    (src / "index.html").write_text("<html>")
    (src / "big.bin").write_text("excluded by *.bin")
    conf = sample(
        "inosync.py", tmp_path / "www.py", wpath=json.dumps(str(src)), rpath=json.dumps(str(dst)),
        rnodes=json.dumps([f"{sshd.alias}:"]), rspeed="2000",
    )  # fmt: skip
    proc = tether(["import-config", conf], tether_ssh_env, check_rc=1)
    assert keys_of(proc.stdout, "dropped") == {"logfile"}
    job = job_text(tether_ssh_env, "www")
    assert job["targets"] == [f"{sshd.alias}:{dst}"] and job["bwlimit"] == 2000
    assert job["exclude"] == ["**/*/6/*", "*.bin"]

    tether(["sync", "www"], tether_ssh_env, check_rc=0)
    assert contents(dst) == {"index.html": b"<html>", "6/top.jpg": b"kept: */6/* needs a folder above 6"}


def test_inosync_pairs_become_one_job_each_and_the_trailing_slash_decides_what_lands(
    tmp_path: Path, tether_env
) -> None:
    one, two = tmp_path / "site", tmp_path / "media"
    for d in (one, two):
        d.mkdir()
        (d / "f.txt").write_text(d.name)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    out2.mkdir()
    conf = tmp_path / "pairs.py"
    conf.write_text(
        f"wpaths = [{str(one) + '/'!r}, {str(two)!r}]\nrpaths = [{str(out1)!r}, {str(out2)!r}]\n"
        'rnodes = [""]\nemask = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO"]\n'
        "edelay = 10\n"
    )
    proc = tether(["import-config", conf, "--name", "web"], tether_env, check_rc=0)
    assert "dropped" not in proc.stdout
    assert job_text(tether_env, "web-2")["targets"] == [str(out2 / "media")]
    assert job_text(tether_env, "web-1")["delay"] == 10
    for name in ("web-1", "web-2"):
        tether(["sync", name], tether_env, check_rc=0)
    assert contents(out1) == {"f.txt": b"site"}
    assert contents(out2) == {"media/f.txt": b"media"}


# -- bad input, --dry-run, --force ---------------------------------------------------------

OSYNC_NO_REPLICAS = 'INSTANCE_ID="x"\nSOFT_DELETE_DAYS=30\nCONFLICT_PREVALANCE=initiator\n'


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("notes.txt", "just some notes\nabout my files\n", "not a config of MiMi, osync, micsync, inosync or unison"),
        ("sync.conf", OSYNC_NO_REPLICAS, "no INITIATOR_SYNC_DIR and no TARGET_SYNC_DIR"),
        ("sync.conf", 'INITIATOR_SYNC_DIR="/a"\nTARGET_SYNC_DIR="/b\nSOFT_DELETE=true\n', 'sync.conf:2: a " quote'),
        ("devops.conf", "source_dir=/a\ntarget_dir=/b\nssh_connection_string=$(hostname)\n", "devops.conf:3:"),
        ("www.py", 'wpath = "/a"\nrpath = "/b"\nrnodes = ["h:",\n', "www.py:3: Python syntax error"),
        ("www.py", 'import os\nwpath = os.getcwd()\nrpath = "/b"\nrnodes = ["h:"]\n', "www.py:1: only"),
    ],
)
def test_bad_input_is_exit_2_naming_the_line_and_writes_nothing(
    tmp_path: Path, tether_env, name: str, text: str, message: str
) -> None:
    conf = tmp_path / name
    conf.write_text(text)
    proc = tether(["import-config", conf], tether_env, check_rc=2)
    assert message in proc.stderr
    assert not jobs_dir(tether_env).exists()


def test_dry_run_prints_the_job_and_writes_nothing(tmp_path: Path, tether_env) -> None:
    one, two = tmp_path / "a", tmp_path / "b"
    conf = tmp_path / "pair.conf"
    conf.write_text(f'INITIATOR_SYNC_DIR="{one}"\nTARGET_SYNC_DIR="{two}"\nCONFLICT_PREVALANCE=initiator\n')
    proc = tether(["import-config", conf, "--dry-run"], tether_env, check_rc=0)
    assert "would write" in proc.stdout and 'conflict = "newer"' in proc.stdout
    assert not jobs_dir(tether_env).exists() and not one.exists() and not two.exists()
    doc = json.loads(tether(["import-config", conf, "-n", "--json"], tether_env, check_rc=0).stdout)
    assert doc["format"] == "osync" and doc["written"] is False and doc["dropped"] == []
    assert tomllib.loads(doc["outputs"][0]["toml"])["path2"] == str(two)
    assert not jobs_dir(tether_env).exists()


def test_an_existing_job_is_replaced_only_with_force(tmp_path: Path, tether_env) -> None:
    conf = tmp_path / "pair.conf"
    conf.write_text(f'INITIATOR_SYNC_DIR="{tmp_path / "a"}"\nTARGET_SYNC_DIR="{tmp_path / "b"}"\n')
    tether(["import-config", conf], tether_env, check_rc=0)
    mine = jobs_dir(tether_env) / "pair.toml"
    mine.write_text(mine.read_text() + "max_delete = 10\n")
    before = mine.read_text()
    proc = tether(["import-config", conf], tether_env, check_rc=2)
    assert "job 'pair'" in proc.stderr and "--force" in proc.stderr
    assert mine.read_text() == before
    tether(["import-config", conf, "--force"], tether_env, check_rc=0)
    assert "max_delete" not in mine.read_text()
    assert sorted(p.name for p in jobs_dir(tether_env).iterdir()) == ["pair.toml"]

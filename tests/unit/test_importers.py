"""The config readers and translations of import-config, without running anything."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tether.errors import ConfigError, UsageError
from tether.filters import Filter
from tether.importers import FORMATS, Imported, TomlValue, detect, inosync, mimi, osync, patterns, shell, to_toml

DATA = Path(__file__).resolve().parent.parent / "data" / "import"
CONF = Path("/etc/x/sync.conf")


def read(text: str, **env: str) -> dict[str, str]:
    return {a.key: a.value for a in shell.read(text, CONF, sections=True, env=env)}


# -- the bash KEY=value reader ------------------------------------------------------------


def test_shell_values_are_read_as_bash_reads_them() -> None:
    text = (
        '#!/bin/bash\n[GENERAL]\nA=plain  # a comment\nB="two words" ; C=\'it\'\'s\'\nD="say \\"hi\\" \\$HOME"\n'
        'E=a\\ b\nexport F=x\nG="multi\nline"\nH=\nI=${A}/$HOME/$UNSET/$\n'
    )
    assert read(text, HOME="/root") == {
        "A": "plain", "B": "two words", "C": "its", "D": 'say "hi" $HOME', "E": "a b", "F": "x",
        "G": "multi\nline", "H": "", "I": "plain//root//$",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('A=1\nB="open\n\nC=2\n', 2, "never closed"),
        ("A=1\nB='open\n", 2, "never closed"),
        ("A=1\n\nB=$(rm -rf /)\n", 3, "command substitution"),
        ('A="`id`"\n', 1, "command substitution"),
        ("A=1 | tee x\n", 1, "something follows"),
        ("A=1\necho hello\n", 2, "not a KEY=value line"),
        ("A=x>y\n", 1, "shell syntax"),
        ("A=${B:-x}\n", 1, "only ${NAME}"),
    ],
)
def test_shell_syntax_errors_name_the_line_and_nothing_runs(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError, match=rf"(?s)^{CONF}:{line}: .*{re.escape(fragment)}"):
        shell.read(text, CONF)


def test_settle_keeps_the_last_value_and_says_what_was_expanded() -> None:
    imp = Imported()
    final = shell.settle(shell.read("A=1\nB=$A\nA=2\n", CONF, env={}), imp)
    assert final["A"].value == "2" and final["A"].line == 3
    assert [k for k, _ in imp.notes] == ["A", "B"]


# -- patterns and the TOML writer ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rsync", "tether"),
    [
        ("*.tmp", "*.tmp"), ("tmp", "tmp"), ("cache/", "cache/"), ("/build", "/build"), ("/a/b", "/a/b"),
        ("a/b", "**/a/b"), ("*/6/*", "**/*/6/*"), ("logs/***", "logs/"), ("**/x", "**/x"), ("#x", "\\#x"),
        ("!keep", "\\!keep"),
    ],
)  # fmt: skip
def test_rsync_patterns_keep_their_meaning(rsync: str, tether: str) -> None:
    assert patterns.from_rsync(rsync) == tether


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "excluded"),
    [
        ("a/b", "x/a/b", False, True), ("a/b", "a/b", False, True), ("*/6/*", "a/6/t.jpg", False, True),
        ("*/6/*", "6/t.jpg", False, False), ("/top", "sub/top", False, False), ("logs/***", "logs", True, True),
    ],
)  # fmt: skip
def test_translated_patterns_match_what_rsync_matches(pattern: str, path: str, is_dir: bool, excluded: bool) -> None:
    assert Filter.build([patterns.from_rsync(pattern)]).excluded(path, is_dir) is excluded


def test_toml_writer_round_trips_awkward_strings() -> None:
    odd = ['quote " back \\ slash', "tab\tnew\nline", "del \x7f bell \x07", "ünïcødé ✓", ""]
    values: dict[str, TomlValue] = {"s": odd[0], "xs": odd, "n": 5, "f": 0.25, "b": True, "ns": [1, 2]}
    text = to_toml(values, ["header with a\nnewline"])
    assert tomllib.loads(text) == values


def test_detect_goes_by_content_not_by_name(tmp_path: Path) -> None:
    names = {m.NAME for m in FORMATS}
    assert {"mimi", "osync", "inosync"} <= names
    for file, fmt in (("mimi.conf", "mimi"), ("osync.conf", "osync"), ("inosync.py", "inosync")):
        text = (DATA / file).read_text()
        assert fmt == detect(text, tmp_path / "renamed.txt").NAME
    with pytest.raises(UsageError, match="not a config of MiMi, osync, micsync, inosync or unison"):
        detect("[section]\nkey = value\n", tmp_path / "sync.conf")


# -- MiMi ---------------------------------------------------------------------------------


def test_mimi_acl_joins_the_m_options() -> None:
    assert mimi.acl("user::rwx,group::rwx,other::--- -m g:serversup:rwx") == (
        "user::rwx,group::rwx,other::---,g:serversup:rwx",
        [],
    )
    assert mimi.acl("-R -m u:a:r -x u:b") == ("u:a:r,u:b", ["-R", "-x"])


def test_mimi_sample_keeps_every_key() -> None:
    imp = mimi.convert((DATA / "mimi.conf").read_text(), DATA / "mimi.conf", "devops")
    job = tomllib.loads(imp.jobs["devops"])
    assert job == {
        "source": "/home/user/projects/devops", "targets": ["joe@example.com:/usr/local/sbin/devops"],
        "interval": 5, "permissions": "user::rwx,group::rwx,other::---,g:serversup:rwx",
        "sync_owner": "joe:joe", "final_owner": "root:root", "sudo": True,
    }  # fmt: skip
    assert imp.dropped == []


def test_mimi_unknown_keys_and_extra_setfacl_options_are_dropped() -> None:
    text = "source_dir=/a\ntarget_dir=/b\nssh_connection_string=h\npermissions='-d -m u:x:r'\nCOLOR=red\nPID=42\n"
    imp = mimi.convert(text, CONF, "j")
    assert [k for k, _ in imp.dropped] == ["permissions", "COLOR"]
    assert "PID" in dict(imp.notes)
    with pytest.raises(ConfigError, match=f"{CONF}:1: source_dir 'rel' is not an absolute"):
        mimi.convert("source_dir=rel\ntarget_dir=/b\nssh_connection_string=h\n", CONF, "j")


# -- osync --------------------------------------------------------------------------------


def osync_job(text: str) -> tuple[dict[str, object], Imported]:
    imp = osync.convert(text, CONF, "j")
    return tomllib.loads(imp.jobs["j"]), imp


def test_osync_replicas_old_and_new_spellings() -> None:
    job, imp = osync_job('INITIATOR_SYNC_DIR="/a"\nTARGET_SYNC_DIR="ssh://me@host:2222//srv/b"\n')
    assert (job["path1"], job["path2"]) == ("/a", "me@host:/srv/b")
    assert dict(imp.dropped)["TARGET_SYNC_DIR"].startswith("port 2222")
    job, imp = osync_job('INITIATOR_SYNC_DIR="ssh://host/rel"\nTARGET_SYNC_DIR="b"\n')
    assert (job["path1"], job["path2"]) == ("host:rel", "/etc/x/b")
    job, imp = osync_job(
        "MASTER_SYNC_DIR=/a\nSLAVE_SYNC_DIR=/b\nREMOTE_SYNC=yes\nREMOTE_USER=u\nREMOTE_HOST=h\nREMOTE_PORT=22\n"
        "CONFLICT_PREVALANCE=slave\n"
    )
    assert (job["path2"], job["conflict"]) == ("u@h:/b", "newer")
    assert imp.dropped == []


def test_osync_without_replicas_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no TARGET_SYNC_DIR"):
        osync.convert('INITIATOR_SYNC_DIR="/a"\nSOFT_DELETE_DAYS=3\n', CONF, "j")


def test_osync_days_backups_and_patterns() -> None:
    job, imp = osync_job(
        "INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR=/b\nCONFLICT_BACKUP_DAYS=0\nSOFT_DELETE_DAYS=7\n"
        'CONFLICT_BACKUP_MULTIPLE=no\nRSYNC_EXCLUDE_PATTERN="a/b|*.tmp"\nPATH_SEPARATOR_CHAR="|"\n'
        'RSYNC_INCLUDE_PATTERN="keep.tmp"\n'
    )
    assert job["trash_days"] == osync.FOREVER_DAYS and job["backups_keep"] == 1
    assert job["exclude"] == ["/.osync_workdir/", "**/a/b", "*.tmp"] and job["include"] == ["keep.tmp"]
    job, imp = osync_job(
        "INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR=/b\nRSYNC_PATTERN_FIRST=exclude\nRSYNC_INCLUDE_PATTERN=x\n"
    )
    assert "include" not in job and "RSYNC_PATTERN_FIRST" in dict(imp.notes)


def test_osync_pattern_files_are_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "exclude.list").write_text("# comment\n*.iso\n- cache/\n+ oops\n")
    conf = tmp_path / "sync.conf"
    imp = osync.convert("INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR=/b\nRSYNC_EXCLUDE_FROM=exclude.list\n", conf, "j")
    assert tomllib.loads(imp.jobs["j"])["exclude"] == ["/.osync_workdir/", "*.iso", "cache/"]
    assert [k for k, _ in imp.dropped] == ["RSYNC_EXCLUDE_FROM (+ oops)"]


def test_osync_commands_become_argument_lists() -> None:
    assert osync.command("/usr/local/bin/snap --all") == (["/usr/local/bin/snap", "--all"], osync.command("a")[1])
    assert osync.command("echo done > /tmp/x")[0] == ["sh", "-c", "echo done > /tmp/x"]
    job, imp = osync_job(
        'INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR="ssh://h//b"\nREMOTE_RUN_BEFORE_CMD="sync"\n'
        "MAX_EXEC_TIME_PER_CMD_BEFORE=20\nMAX_EXEC_TIME_PER_CMD_AFTER=90\n"
    )
    assert (job["before"], job["commands_on"], job["command_timeout"]) == (["sync"], "path2", 90)
    job, imp = osync_job('INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR="ssh://h//b"\nLOCAL_RUN_AFTER_CMD=x\n'
                         "REMOTE_RUN_AFTER_CMD=y\n")  # fmt: skip
    assert job["after"] == ["x"] and "commands_on" not in job
    assert [k for k, _ in imp.dropped] == ["REMOTE_RUN_AFTER_CMD"]
    assert job["after_on_error"] is False and "before_fails" not in job  # osync's defaults
    job, imp = osync_job("INITIATOR_SYNC_DIR=/a\nTARGET_SYNC_DIR=/b\nLOCAL_RUN_AFTER_CMD=x\n"
                         "STOP_ON_CMD_ERROR=false\nRUN_AFTER_CMD_ON_ERROR=yes\n")  # fmt: skip
    assert (job["before_fails"], job["after_on_error"]) == ("continue", True)


def test_osync_sample_accounts_for_every_key() -> None:
    text = (DATA / "osync.conf").read_text()
    imp = osync.convert(text, DATA / "osync.conf", "j")
    said = {k.split(" ")[0] for k, _ in imp.notes + imp.dropped}
    settings = {a.key for a in shell.read(text, CONF, sections=True) if not osync._off(a.value)}
    # written into the job as they are, or asking for what tether does anyway
    silent = {"RSYNC_EXECUTABLE", "RSYNC_PATTERN_FIRST", "RSYNC_EXCLUDE_PATTERN", "PATH_SEPARATOR_CHAR",
              "PRESERVE_PERMISSIONS", "PRESERVE_EXECUTABILITY", "CONFLICT_BACKUP", "DELTA_COPIES",
              "STOP_ON_CMD_ERROR"}  # fmt: skip
    assert settings - said == silent


# -- inosync ------------------------------------------------------------------------------


def test_inosync_reads_literals_only() -> None:
    found = inosync.literals('"""doc"""\nwpath = "/a"\nrspeed: int = 5\nrnodes = ("h:",)\n', CONF)
    assert {k: v.value for k, v in found.items()} == {"wpath": "/a", "rspeed": 5, "rnodes": ("h:",)}
    for text, line in (("a = 1\nb = open('/etc/passwd').read()\n", 2), ("a = 1\nfor x in y: pass\n", 2)):
        with pytest.raises(ConfigError, match=f"{CONF}:{line}: "):
            inosync.literals(text, CONF)


def test_inosync_extra_options() -> None:
    text = 'wpath = "/a"\nrpath = "/b"\nrnodes = ["h:"]\n'
    text += 'extra = "-avzH --delete -e ssh --checksum --remove-source-files x"\n'
    imp = inosync.convert(text, CONF, "j")
    assert tomllib.loads(imp.jobs["j"])["rsync_args"] == ["-z", "-H", "--checksum"]
    assert [k for k, _ in imp.dropped] == ["extra (--remove-source-files)", "extra (x)"]


def test_inosync_nodes_and_ports() -> None:
    text = 'wpaths = ["/a/", "/c/"]\nrpaths = ["/b", "/d"]\nrnodes = ["", "ssh://u@h:22", "ssh://u@g:2200", "h::m"]\n'
    imp = inosync.convert(text, CONF, "j")
    assert tomllib.loads(imp.jobs["j-1"])["targets"] == ["/b", "u@h:/b", "u@g:/b"]
    assert tomllib.loads(imp.jobs["j-2"])["targets"] == ["/d", "u@h:/d", "u@g:/d"]
    assert [k for k, _ in imp.dropped] == ["rnodes", "rnodes"]  # once per node, not per pair
    with pytest.raises(ConfigError, match=f"{CONF}:4: extra: No closing quotation"):
        inosync.convert('wpath = "/a"\nrpath = "/b"\nrnodes = [""]\nextra = "--rsh=\'ssh -p"\n', CONF, "j")
    with pytest.raises(ConfigError, match="2 wpaths but 1 rpaths"):
        inosync.convert('wpaths = ["/a", "/c"]\nrpaths = ["/b"]\nrnodes = [""]\n', CONF, "j")

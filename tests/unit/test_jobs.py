"""The one job loader: the kind read from the parsed table, one schema framework for every kind,
every mistake named by file:line with what to write instead.  Bad files are data: each row is a
file's text, the line the error must name and a fragment of the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.bisync.config import BisyncJob
from tether.config import MirrorJob
from tether.errors import ConfigError
from tether.filters import Filter
from tether.jobs import Job, load_job
from tether.service.daemon import feedback_loop

M = 'source = "/srv/a"\ntargets = ["/mnt/b"]\n'  # a valid mirror job, two lines
B = 'kind = "bisync"\npath1 = "/srv/a"\npath2 = "/mnt/b"\n'  # a valid bisync job, three lines


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text",
    [
        '"kind" = "bisync"\npath1 = "/srv/a"\npath2 = "/mnt/b"\n',
        "'kind' = 'bisync'\npath1 = '/srv/a'\npath2 = '/mnt/b'\n",
        'path1 = "/srv/a"\n  kind   =   "bisync"  # late, indented\npath2 = "/mnt/b"\n',
        'path1 = "/srv/a"\npath2 = "/mnt/b"\nkind = """bisync"""\n',
    ],
)
def test_the_kind_is_read_from_the_parsed_table(tmp_path: Path, text: str) -> None:
    job = load_job(write(tmp_path, text), "j")
    assert isinstance(job, BisyncJob)
    assert (str(job.path1), str(job.path2)) == ("/srv/a", "/mnt/b")


def test_a_job_without_kind_is_a_mirror(tmp_path: Path) -> None:
    assert isinstance(load_job(write(tmp_path, M), "j"), MirrorJob)
    assert isinstance(load_job(write(tmp_path, 'kind = "mirror"\n' + M), "j"), MirrorJob)


BAD = [
    # TOML syntax, in either kind: the line of the mistake
    (B + 'exclude = ["*.o"\n', 4, "invalid TOML"),
    ('kind = "bisync"\npath1 = /srv/a\npath2 = "/mnt/b"\n', 2, "invalid TOML"),
    ('"kind" = "bisync"\npath1 = "/srv/a"\n\npath2 = "/mnt/b\n', 4, "invalid TOML"),
    (M + "delete = 'keep'\ndelete = 'keep'\n", 4, "invalid TOML"),
    # the kind itself
    ('kind = "bisinc"\n' + M, 1, "(?s)kind must be one of 'mirror', 'bisync', not 'bisinc'.*did you mean 'bisync'"),
    (M + "kind = 3\n", 3, "kind must be one of"),
    # unknown keys: did you mean, or the other kind's key
    (B + "conflit = 'newer'\n", 4, "(?s)unknown key 'conflit'.*did you mean 'conflict'"),
    (B + "exclude_form = 'x'\n", 4, "(?s)unknown key 'exclude_form'.*did you mean 'exclude_from'"),
    (B + "targets = ['/x']\n", 4, "(?s)unknown key 'targets'.*a key of mirror jobs, and this is a bisync job"),
    (M + "path2 = '/x'\n", 3, "(?s)unknown key 'path2'.*a key of bisync jobs, and this is a mirror job"),
    (M + "max_time_warn = 5\n", 3, "(?s)unknown key 'max_time_warn'.*did you mean 'max_time_soft'"),
    (M + "max_time_kill = 5\n", 3, "(?s)did you mean 'max_time_hard'"),
    (M + "befor = ['true']\n", 3, "(?s)did you mean 'before'"),
    (M + "[hooks]\nbefore = ['true']\n", 3, "unknown key 'hooks'"),
    (M + "rsync.path = 'x'\n", 3, "rsync must be the path of the rsync program"),
    # values of the wrong type, in the keys both kinds share
    (B + "rsync_args = '--hard-links'\n", 4, "rsync_args must be a list of rsync options"),
    (B + "rsync = ''\n", 4, "rsync must be the path of the rsync program"),
    (B + "exclude_from = 3\n", 4, "exclude_from must be a path"),
    (M + "before = 'snapshot'\n", 3, "before must be a command as a list of strings"),
    (M + "after = []\n", 3, "after must be a command"),
    (M + "max_time_soft = 0\n", 3, r"max_time_soft must be a number of seconds \(more than 0, at most a year\)"),
    (M + "interval = 31536001\n", 3, "at most a year"),
    (M + "command_timeout = nan\n", 3, "command_timeout must be a number of seconds"),
    (M + "delay = inf\n", 3, "delay must be a number of seconds"),
    (B + "interval = -inf\n", 4, "interval must be a number of seconds"),
    (M + "trash_days = 100000\n", 3, "trash_days must be a whole number of days"),
    (M + "max_time_hard = '1h'\n", 3, "max_time_hard must be"),
    (M + "command_timeout = -1\n", 3, "command_timeout must be"),
    (B + "bwlimit = '5 MB'\n", 4, "bwlimit must be a rate"),
    (B + "python = 'python3 -S'\n", 4, "python must be a program name"),
    (B + "trash_days = 1.5\n", 4, "trash_days must be a whole number"),
    # what a type cannot say
    (B + "rsync_args = ['--delete']\n", 4, "rsync_args may not contain '--delete'"),
    (M + "max_time_soft = 60\nmax_time_hard = 30\n", 3, "max_time_soft is longer than max_time_hard"),
    (B + "exclude_from = 'missing.txt'\n", 4, "cannot read exclude file"),
    (B + "exclude = ['/']\n", 4, "bad pattern"),
    ('kind = "bisync"\npath1 = "/srv/a"\npath2 = "/srv/a/b"\n', 3, "overlap"),
    ('kind = "bisync"\npath1 = "h1:/a"\npath2 = "h2:/b"\n', 3, "both remote"),
    ('kind = "bisync"\npath1 = "-oProxyCommand=x:/a"\npath2 = "/b"\n', 2, "not a valid ssh host"),
    (B + "conflict = 'mine'\n", 4, "conflict must be one of keep-both"),
    (B + "commands_on = 'there'\n", 4, "commands_on must be one of local, path1, path2"),
    (B + "interval = 0\n", 4, "interval must be"),
    (M + "delete = 'yes'\n", 3, "delete must be one of mirror, keep, trash"),
    (M + "commands_on = 'path1'\n", 3, "commands_on must be one of local, targets"),
    (M + "before_fails = 'ignore'\n", 3, "before_fails must be one of skip, continue"),
    (M + "after_on_error = 'no'\n", 3, "after_on_error must be true or false"),
    (
        'source = "/srv/a"\ntargets = ["/mnt/b", "box:bucket"]\ncommands_on = "targets"\n',
        3,
        "target box:bucket cannot run commands",
    ),
    (
        'kind = "bisync"\npath1 = "/srv/a"\npath2 = "box:bucket"\ncommands_on = "path2"\n',
        4,
        "path2 box:bucket cannot run commands",
    ),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD)
def test_bad_files_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, fragment: str
) -> None:
    monkeypatch.setenv("RCLONE_CONFIG_BOX_TYPE", "local")  # box:bucket is an rclone remote
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=fragment) as e:
        load_job(p, "j")
    assert str(e.value).startswith(f"{p}:{line}: "), str(e.value)
    assert e.value.code == 2 and e.value.hint


@pytest.mark.parametrize(
    ("text", "key"), [(M.split("\n", 1)[1], "source"), (B.replace('path1 = "/srv/a"\n', ""), "path1")]
)
def test_a_missing_required_key_says_what_to_add(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{p}: missing key '{key}'") as e:
        load_job(p, "j")
    assert e.value.hint is not None and e.value.hint.startswith(f"add a line like: {key} = ")


def test_shared_keys_mean_the_same_in_both_kinds(tmp_path: Path) -> None:
    (tmp_path / "ignore").write_text("*.log\n")
    shared = (
        "exclude_from = 'ignore'\nrsync = '/usr/bin/rsync'\nrsync_args = ['--hard-links']\n"
        "before = ['snap']\nafter = ['note', 'done']\ncommand_timeout = 9\n"
        "max_time_soft = 10\nmax_time_hard = 20\nbwlimit = 500\nbefore_fails = 'continue'\nafter_on_error = false\n"
    )
    m = load_job(write(tmp_path, M + shared), "m")
    b = load_job(write(tmp_path, B + shared), "b")
    assert isinstance(m, MirrorJob) and isinstance(b, BisyncJob)
    assert m.hooks._replace(job="b", kind="bisync") == b.hooks
    assert (m.hooks.job, m.hooks.kind, m.hooks.before_fails, m.hooks.after_on_error) == (
        "m",
        "mirror",
        "continue",
        False,
    )
    assert (m.hooks.before, m.hooks.after, m.hooks.command_timeout) == (("snap",), ("note", "done"), 9.0)
    assert (m.hooks.max_time_soft, m.hooks.max_time_hard) == (10.0, 20.0)
    assert (m.spec.rsync, m.spec.rsync_args, m.spec.bwlimit) == (b.rsync, b.rsync_args, b.bwlimit)
    assert (b.rsync, b.rsync_args, b.bwlimit) == ("/usr/bin/rsync", ("--hard-links",), "500")
    for f in (m.spec.filter, b.filter):
        assert isinstance(f, Filter) and f.path_excluded("a/x.log", False) and not f.path_excluded("x.txt", False)


def test_defaults_come_from_the_schema(tmp_path: Path) -> None:
    b = load_job(write(tmp_path, B), "b")
    assert isinstance(b, BisyncJob)
    assert (b.policy, b.max_delete, b.backups_keep, b.interval, b.rsync, b.rsync_args) == (
        "keep-both", 50, 10, 60.0, "rsync", ()
    )  # fmt: skip
    assert not b.hooks.before and b.hooks.max_time_hard is None and b.hooks.command_timeout == 300.0


def _jobs(tmp_path: Path, **bodies: str) -> list[Job]:
    out = []
    for name, body in bodies.items():
        (tmp_path / f"{name}.toml").write_text(body)
        out.append(load_job(tmp_path / f"{name}.toml", name))
    return out


def _m(src: str, dst: str) -> str:
    return f'source = "/srv/{src}"\ntargets = ["/srv/{dst}"]\n'


@pytest.mark.parametrize(
    ("bodies", "loop"),
    [
        ({"xy": _m("x", "y"), "yx": _m("y", "x")}, ["xy", "yx"]),
        ({"xy": _m("x", "y"), "yz": _m("y", "z")}, []),  # a chain is fine: a mirror of a mirror
        ({"xy": _m("x", "y"), "yz": _m("y", "z"), "zx": _m("z", "x")}, ["xy", "yz", "zx"]),
        ({"xy": _m("x", "y"), "inner": _m("y/sub", "x/copy")}, ["xy", "inner"]),  # inside counts
        ({"xy": _m("x", "y"), "pair": 'kind = "bisync"\npath1 = "/srv/y"\npath2 = "/srv/x"\n'}, ["xy", "pair"]),
        ({"xy": _m("x", "y"), "ab": _m("a", "b"), "yx": _m("y", "x/in")}, ["xy", "yx"]),
    ],
)
def test_jobs_that_feed_each_other_are_found_as_a_loop(tmp_path: Path, bodies: dict[str, str], loop: list[str]) -> None:
    job, *others = _jobs(tmp_path, **bodies)
    found = feedback_loop(job, others)
    assert [a.name for a, _w, _b in found] == loop
    assert all(b is (found[i + 1][0] if i + 1 < len(found) else job) for i, (_a, _w, b) in enumerate(found))

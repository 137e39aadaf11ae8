"""Job files: every mistake is an error naming file, line and key, with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import MirrorJob
from tether.endpoints import Local, Ssh, parse_endpoint
from tether.errors import ConfigError, UsageError
from tether.jobkeys import validate_rsync_args
from tether.jobs import load_job


def parse_job(file: Path, name: str) -> MirrorJob:
    job = load_job(file, name)
    assert isinstance(job, MirrorJob)
    return job


def job(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "web.toml"
    p.write_text(text)
    return p


def test_a_valid_job(tmp_path: Path) -> None:
    p = job(
        tmp_path,
        'source = "/srv/a"\ntargets = ["/mnt/b", "host:/c"]\nexclude = ["*.tmp"]\nbwlimit = "5M"\n',
    )
    j = parse_job(p, "web")
    assert j.spec.source == Local("/srv/a")
    assert j.spec.targets == (Local("/mnt/b"), Ssh("host", "/c"))
    assert j.spec.delete and j.spec.bwlimit == "5M"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('source = "/a"\ntagets = ["/b"]\n', 2, "(?s)unknown key 'tagets'.*did you mean 'targets'"),
        ('source = "/a"\ntargets = "/b"\n', 2, "targets must be a list of paths"),
        ('source = "rel/a"\ntargets = ["/b"]\n', 1, "relative path"),
        ('source = "/a"\ntargets = ["/a/b"]\n', 2, "inside the source"),
        ('source = "/a/b"\ntargets = ["/a"]\n', 2, "source /a/b is inside"),
        (
            'source = "/a"\ntargets = ["/b"]\ndelete = "yes"\n',
            3,
            "delete must be one of mirror, keep, trash",
        ),
        (
            'source = "/a"\ntargets = ["/b"]\nrsync_args = ["--delete-after"]\n',
            3,
            "may not contain",
        ),
        ('source = "/a"\n\ntargets = ["/b"\n', 3, "invalid TOML"),
        ('source = /a\ntargets = ["/b"]\n', 1, "invalid TOML"),
        ('source = "/a"\ntargets = ["/b"]\nbwlimit = true\n', 3, "bwlimit must be"),
        ('source = "/a"\ntargets = ["/b"]\ndelay = -1\n', 3, "delay must be"),
        ('source = "/a"\ntargets = ["/b"]\ninterval = "hourly"\n', 3, "interval must be"),
        ('source = "/a"\ntargets = ["/b"]\nsync_owner = "a b"\n', 3, "sync_owner must be"),
        ('source = "/a"\ntargets = ["/b"]\nsudo = "yes"\n', 3, "sudo must be"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    p = job(tmp_path, text)
    with pytest.raises(ConfigError, match=fragment) as e:
        parse_job(p, "web")
    assert str(e.value).startswith(f"{p}:{line}: ")
    assert e.value.code == 2


def test_continuous_mirror_keys(tmp_path: Path) -> None:
    text = 'source = "/a"\ntargets = ["/b"]\ndelete = "trash"\ntrash_days = 7\ndelay = 0.2\ninterval = 0\n'
    j = parse_job(job(tmp_path, text), "web")
    assert j.spec.trash and j.spec.delete and j.live.trash_days == 7
    assert (j.live.delay, j.live.interval) == (0.2, 0.0)


def test_missing_key_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"(?s)missing key .targets.*targets = "):
        parse_job(job(tmp_path, 'source = "/a"\n'), "web")


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no job named 'nope'"):
        parse_job(tmp_path / "nope.toml", "nope")


@pytest.mark.parametrize("arg", ["--delete", "--delete-excluded", "-e", "-avn", "--files-from=x", "--rsh=ssh"])
def test_rsync_args_deny_list(arg: str) -> None:
    assert validate_rsync_args([arg]) == arg


def test_rsync_args_allowed() -> None:
    assert validate_rsync_args(["--hard-links", "-H", "--chmod=D755"]) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("host:/srv/x", Ssh("host", "/srv/x")),
        ("me@host:/srv/x", Ssh("me@host", "/srv/x")),
        ("alias:", Ssh("alias", "")),
        ("/abs/a:b", Local("/abs/a:b")),
        ("./a:b", Local("/base/a:b")),
        ("-rf", Local("/base/-rf")),
    ],
)
def test_endpoint_specs(spec: str, expected: object) -> None:
    assert parse_endpoint(spec, base="/base") == expected


@pytest.mark.parametrize("spec", ["-oProxyCommand=x:/p", "-o:/a", "u@-p:/a"])
def test_host_that_looks_like_an_option_is_refused(spec: str) -> None:
    with pytest.raises(UsageError, match="not a valid ssh host"):
        parse_endpoint(spec)


def test_a_target_named_after_an_rclone_remote_is_that_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cloud:x` is an rclone remote when rclone knows `cloud` (here by variable), else an ssh host;
    owners and ACLs cannot be applied there, and the job says so naming the line."""
    from tether.endpoints import Rclone

    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "none.conf"))
    monkeypatch.setenv("RCLONE_CONFIG_CLOUD_TYPE", "local")
    j = parse_job(job(tmp_path, 'source = "/srv/a"\ntargets = ["cloud:backup/a", "host:/c"]\n'), "web")
    assert j.spec.targets == (Rclone("cloud", "backup/a"), Ssh("host", "/c"))
    p = job(tmp_path, 'source = "/srv/a"\ntargets = ["cloud:b", "cloud:b"]\n')
    with pytest.raises(ConfigError, match=r"web.toml:2.*given twice"):
        parse_job(p, "web")
    p = job(tmp_path, 'source = "/srv/a"\ntargets = ["cloud:b"]\nsync_owner = "www-data"\n')
    with pytest.raises(ConfigError, match=r"(?s)web.toml:3.*sync_owner cannot be applied on the rclone remote"):
        parse_job(p, "web")
    p = job(tmp_path, 'source = "/srv/a"\ntargets = ["cloud:b"]\npreserve = ["acl"]\n')
    with pytest.raises(ConfigError, match=r"(?s)web.toml:3.*cannot keep acl"):
        parse_job(p, "web")

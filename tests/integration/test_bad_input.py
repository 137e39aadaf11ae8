"""Bad input: a clear message, a meaningful exit code, no traceback, no partial change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rig.compare import assert_same_tree
from tests.rig.live import running, status, wait_for
from tests.rig.run import tether, tether_unprivileged
from tests.rig.sshd import ALIAS_BAD_CLIENT_KEY, ALIAS_UNKNOWN_HOSTKEY, SshServer
from tests.rig.trees import make_tree


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 40, seed=7, hostile=False)
    return src, dst


def test_missing_source(tmp_path: Path, tether_env) -> None:
    proc = tether(["mirror", tmp_path / "nope", tmp_path / "dst"], tether_env, check_rc=2)
    assert f"source {tmp_path / 'nope'} does not exist" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_target_inside_source(trees: tuple[Path, Path], tether_env) -> None:
    src, dst = trees
    proc = tether(["mirror", src, dst, src / "inner"], tether_env, check_rc=2)
    assert "is inside the source" in proc.stderr
    assert not dst.exists() and not (src / "inner").exists()


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("no-such-host.invalid", "no-such-host.invalid: unknown host: the name does not resolve"),
        (
            ALIAS_UNKNOWN_HOSTKEY,
            f"{ALIAS_UNKNOWN_HOSTKEY}: its host key is not in your known_hosts",
        ),
        (ALIAS_BAD_CLIENT_KEY, f"{ALIAS_BAD_CLIENT_KEY}: the server refused the key"),
        ("tether-down", "tether-down: connection refused"),
    ],
)
def test_ssh_failures_are_one_line_naming_host_and_cause(
    trees: tuple[Path, Path], sshd: SshServer, tether_ssh_env, host: str, message: str
) -> None:
    src, dst = trees
    proc = tether(["mirror", src, f"{host}:{dst}"], tether_ssh_env, check_rc=1)
    assert f"FAIL  {host}:{dst}: {message}" in proc.stderr
    assert not dst.exists()
    if host == ALIAS_UNKNOWN_HOSTKEY:
        assert f"ssh {host}" in proc.stderr  # says how to accept the key


def test_missing_remote_rsync(trees: tuple[Path, Path], tmp_path_factory, tether_env) -> None:
    src, dst = trees
    with SshServer.start(tmp_path_factory.mktemp("nopath"), ["SetEnv PATH=/nonexistent"]) as server:
        proc = tether(["mirror", src, f"{server.alias}:{dst}"], server.env(tether_env), check_rc=1)
    assert f"{server.alias}: rsync is not installed on the remote host" in proc.stderr
    assert not dst.exists()


def test_unreadable_source_file_is_reported_and_the_rest_copied(trees: tuple[Path, Path], tether_env) -> None:
    """Root reads everything, so tether runs here without the capabilities that allow it."""
    src, dst = trees
    secret = src / "secret.txt"
    secret.write_text("no")
    secret.chmod(0o000)
    proc = tether_unprivileged(["mirror", src, dst], tether_env)
    assert proc.returncode == 1, proc.stderr
    assert "secret.txt" in proc.stderr and "Permission denied" in proc.stderr
    assert not (dst / "secret.txt").exists()
    secret.unlink()
    assert_same_tree(src, dst)


def _write_job(env: dict[str, str], name: str, text: str) -> Path:
    jobs = Path(env["TETHER_HOME"]) / "config" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    p = jobs / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ('source = "{src}"\ntargets = ["{dst}"]\nexclude = ["*.o"\n', 3, "invalid TOML"),
        ('source = "{src}"\ntargets = ["{dst}"]\ndelet = "keep"\n', 3, "unknown key 'delet'"),
        ('source = "{src}"\ntargets = ["{src}/x"]\n', 2, "inside the source"),
        ('source = "src"\ntargets = ["{dst}"]\n', 1, "relative path"),
    ],
)
def test_bad_job_file(trees: tuple[Path, Path], tether_env, body: str, line: int, fragment: str) -> None:
    src, dst = trees
    p = _write_job(tether_env, "web", body.format(src=src, dst=dst))
    for cmd in (["sync", "web"], ["check", "web"]):
        proc = tether(cmd, tether_env, check_rc=2)
        assert f"{p}:{line}: " in proc.stderr and fragment in proc.stderr
    assert not dst.exists()
    listing = tether(["jobs"], tether_env, check_rc=2)
    assert "INVALID" in listing.stdout


def test_a_named_job_runs(trees: tuple[Path, Path], tether_env) -> None:
    src, dst = trees
    _write_job(tether_env, "web", f'source = "{src}"\ntargets = ["{dst}"]\nexclude = ["*.nothing"]\n')
    assert "ok (mirror" in tether(["check", "web"], tether_env, check_rc=0).stdout
    assert "web" in tether(["jobs"], tether_env, check_rc=0).stdout
    tether(["sync", "web"], tether_env, check_rc=0)
    assert_same_tree(src, dst)
    assert "no job named 'nope'" in tether(["sync", "nope"], tether_env, check_rc=2).stderr


def test_usage_errors_exit_2_without_traceback(tether_env) -> None:
    assert tether(["mirror"], tether_env, check_rc=2).stderr.startswith("tether: error:")
    assert tether(["frobnicate"], tether_env, check_rc=2).stderr.startswith("tether: error:")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["mirror", "SRC", "DST", "--watch", "--delay", "nan"],
            "argument --delay: must be a number from 0 to 60, not 'nan'",
        ),
        (["mirror", "SRC", "DST", "--watch", "--delay", "61"], "argument --delay: must be a number from 0 to 60"),
        (["stop", "x", "--timeout", "0"], "argument --timeout: must be a number more than 0 to 86400, not '0'"),
        (["wait", "x", "--timeout", "inf"], "argument --timeout: must be a number more than 0"),
        (["serve", "--port", "70000"], "argument --port: must be a whole number from 0 to 65535"),
        (["log", "x", "-n", "-1"], "argument -n/--lines: must be a whole number from 0"),
        (["bisync", "A", "B", "--max-delete", "150"], "argument --max-delete: must be a whole number from 0 to 100"),
    ],
)
def test_every_number_flag_has_a_range(trees: tuple[Path, Path], tether_env, args: list[str], says: str) -> None:
    src, dst = trees
    argv = [str(src) if a == "SRC" else str(dst) if a == "DST" else a for a in args]
    assert says in tether(argv, tether_env, check_rc=2).stderr


def test_a_job_whose_interval_is_thirty_days_runs(trees: tuple[Path, Path], tether_env) -> None:
    """Found by trying: any interval over about 24.8 days overflowed the watcher's poll() and the
    job died at start."""
    src, dst = trees
    _write_job(tether_env, "monthly", f'source = "{src}"\ntargets = ["{dst}"]\ninterval = 2592000\n')
    with running(tether_env, "monthly"):
        (src / "new.txt").write_text("new\n")
        wait_for(lambda: (dst / "new.txt").exists(), what="the change carried")
        assert status(tether_env, "monthly")["state"] == "running"


def test_two_jobs_that_feed_each_other_are_refused_naming_both(tmp_path: Path, tether_env) -> None:
    """Found by trying: x -> y and y -> x both started, and one `echo > x/f` then copied about
    85 times a second forever."""
    x, y = tmp_path / "x", tmp_path / "y"
    x.mkdir()
    y.mkdir()
    _write_job(tether_env, "xy", f'source = "{x}"\ntargets = ["{y}"]\n')
    _write_job(tether_env, "yx", f'source = "{y}"\ntargets = ["{x}"]\n')
    with running(tether_env, "xy"):
        for cmd in (["start", "yx"], ["sync", "yx"], ["run", "yx"]):
            proc = tether(cmd, tether_env, check_rc=2)
            assert "jobs 'yx' and 'xy' feed each other" in proc.stderr, (cmd, proc.stderr)
            assert f"yx writes {x}, which xy reads; xy writes {y}, which yx reads" in proc.stderr
        assert status(tether_env, "yx")["running"] is False

"""Alert settings as a job file and alerts.toml hold them: what loads, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.alerts.config import NONE, merged
from tether.errors import ConfigError
from tether.jobs import load_job
from tether.schema import parse_size

JOB = 'source = "{src}"\ntargets = ["{dst}"]\n'


def job_file(tmp_path: Path, extra: str) -> Path:
    f = tmp_path / "j.toml"
    f.write_text(JOB.format(src=tmp_path / "src", dst=tmp_path / "dst") + extra)
    return f


def test_a_job_with_alerts_loads_them(tmp_path: Path):
    (tmp_path / "pw").write_text("s3cret\n")
    f = job_file(tmp_path, '[alerts]\nwebhook = "http://127.0.0.1:9/h"\nheartbeat = "https://hc.example/x"\n'
                 'down_after = 5\nmin_free = "1.5G"\n'
                 'email = { host = "127.0.0.1", port = 2525, security = "none", to = "a@b.c", user = "u",'
                 ' password_file = "pw" }\n')  # fmt: skip
    a = load_job(f, "j").alerts
    assert a is not None and a.webhooks == ("http://127.0.0.1:9/h",) and a.heartbeats == ("https://hc.example/x",)
    assert a.down_after == 5 and a.min_free == int(1.5 * (1 << 30))
    (e,) = a.emails
    assert (e.host, e.port, e.security, e.to, e.user) == ("127.0.0.1", 2525, "none", ("a@b.c",), "u")
    assert e.password() == "s3cret"  # the file is relative to the job file, its newline dropped


@pytest.mark.parametrize(
    "extra",
    [
        '[alerts]\nemail = { host = "smtp.example.com", to = ["a@b.c"], user = "me", password = "hunter2" }\n',
        '[alerts.email]\nhost = "smtp.example.com"\nto = ["a@b.c"]\npassword = "hunter2"\n',
        'password = "hunter2"\n',
        'kind = "mirror"\n[alerts]\nwebhook = "https://x.example"\n[alerts.email]\nhost = "h"\nto = "a@b"\n'
        'smtp_password = "x"\n',
    ],
)
def test_a_password_in_clear_text_is_refused_with_its_line_and_where_to_put_it(tmp_path: Path, extra: str):
    f = job_file(tmp_path, extra)
    with pytest.raises(ConfigError) as e:
        load_job(f, "j")
    line = next(i for i, ln in enumerate(f.read_text().splitlines(), 1) if "password =" in ln)
    assert f"{f}:{line}:" in e.value.message
    assert "password_file" in str(e.value) and "password_env" in str(e.value)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('[alerts]\nwebhok = "https://x"\n', "did you mean 'webhook'"),
        ('[alerts]\nwebhook = "ftp://x"\n', "http(s) URL"),
        ('[alerts]\nmin_free = "lots"\n', "must be a size"),
        ('[alerts]\nemail = { to = "a@b.c" }\n', "needs host"),
        ('[alerts]\nemail = { host = "h", to = "nobody" }\n', "address"),
        ('[alerts]\nemail = { host = "h", to = "a@b.c", security = "ssl" }\n', "starttls, tls, none"),
        ('[alerts]\nemail = { host = "h", to = "a@b.c", user = "u", password_file = "/nonexistent/pw" }\n',
         "cannot be read"),
        ('[alerts]\nemail = { host = "h", to = "a@b.c", password_env = "X" }\n', "no user"),
        ('alerts = 3\n', "a table"),
    ],
)  # fmt: skip
def test_bad_alert_settings_name_the_line_and_what_to_write(tmp_path: Path, extra: str, says: str):
    f = job_file(tmp_path, extra)
    with pytest.raises(ConfigError) as e:
        load_job(f, "j")
    assert says in str(e.value)
    assert e.value.message.startswith(f"{f}:")


def test_alerts_toml_applies_to_every_job_or_those_it_names(tmp_path: Path):
    (tmp_path / "alerts.toml").write_text('webhook = "http://127.0.0.1:9/all"\njobs = ["a"]\n')
    assert merged("a", NONE, tmp_path).webhooks == ("http://127.0.0.1:9/all",)
    assert merged("b", NONE, tmp_path) == NONE
    (tmp_path / "alerts.toml").write_text('webhook = "http://127.0.0.1:9/all"\n')
    own = NONE._replace(webhooks=("http://127.0.0.1:9/own",), down_after=5)
    got = merged("b", own, tmp_path)
    assert got.webhooks == ("http://127.0.0.1:9/all", "http://127.0.0.1:9/own") and got.down_after == 5


def test_alerts_toml_refuses_a_password_too(tmp_path: Path):
    (tmp_path / "alerts.toml").write_text('[email]\nhost = "h"\nto = "a@b.c"\n\npassword = "x"\n')
    with pytest.raises(ConfigError, match=r"alerts\.toml:5: email\.password holds a password"):
        merged("a", NONE, tmp_path)


SIZES = [(0, 0), (512, 512), ("1K", 1024), ("500M", 500 << 20), ("1.5G", 3 << 29), ("2TiB", 2 << 40),
         ("1gb", 1 << 30), ("-1", None), ("G", None), (True, None)]  # fmt: skip


@pytest.mark.parametrize(("text", "n"), SIZES)
def test_sizes(text: object, n: int | None):
    assert parse_size(text) == n

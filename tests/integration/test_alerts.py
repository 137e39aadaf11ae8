"""Alerts end to end: real jobs, a real SMTP server and a real HTTP server receiving them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.rig.alerts import http_server, self_signed, smtp_server
from tests.rig.live import running, status, wait_for, wait_same, write_job_text
from tests.rig.run import tether
from tests.rig.sshd import ALIAS_DOWN, SshServer
from tests.rig.trees import make_tree


def alerts_table(smtp_port: int, url: str, down_after: float = 60) -> str:
    return (
        "[alerts]\n"
        f"down_after = {down_after}\n"
        f'webhook = "{url}/hook"\n'
        f'heartbeat = "{url}/ping"\n'
        f'email = {{ host = "127.0.0.1", port = {smtp_port}, security = "none", to = ["admin@example.com"], '
        'from = "tether@example.com" }\n'
    )


def test_a_target_that_flaps_gives_exactly_one_down_and_one_recovery_message(
    tmp_path: Path, tmp_path_factory, tether_env
) -> None:
    """Down for longer than the threshold, then 5 flaps (back, down again) each within it, then
    back for good: one "down" message and one "back" message, by mail and by webhook."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 20, seed=31, hostile=False)
    threshold = 6
    with (
        smtp_server() as (port, box),
        http_server() as (url, hits),
        SshServer.start(tmp_path_factory.mktemp("flap")) as server,
    ):
        env = server.env(tether_env)
        body = f'source = "{src}"\ntargets = ["{server.alias}:{dst}"]\ninterval = 0\n'
        write_job_text(env, "f", body + alerts_table(port, url, threshold))
        state = lambda: status(env, "f")["targets"][0]["state"]  # noqa: E731
        n = 0

        def outage() -> None:
            nonlocal n
            server.stop()
            n += 1
            (src / f"during-{n}.txt").write_text(f"written while down ({n})")
            wait_for(lambda: state() in ("down", "retrying"), 60, "the target to be seen down")

        def back() -> None:
            server.restart()
            wait_for(lambda: state() == "idle", 60, "the target to be seen back")

        with running(env, "f"):
            wait_same(src, dst)
            wait_for(lambda: "/ping" in hits.paths(), 30, "the first full pass's success ping")
            outage()
            wait_for(lambda: any("is down" in s for s in box.subjects()), 60, "the down message")
            for _ in range(5):
                back()
                outage()  # back for far less than the threshold
            back()
            wait_for(lambda: any("is back" in s for s in box.subjects()), 60, "the recovery message")
            wait_same(src, dst)
            time.sleep(threshold + 2)  # not a race: a second down or back message would come within this
        subjects = box.subjects()
        assert sum("is down" in s for s in subjects) == 1, subjects
        assert sum("is back" in s for s in subjects) == 1, subjects
        down = next(m for m in box.messages if "is down" in str(m["Subject"]))
        assert str(down["To"]) == "admin@example.com" and server.alias in str(down["Subject"])
        assert "6 outages" in next(m for m in box.messages if "is back" in str(m["Subject"])).get_content()
        kinds = [p["kind"] for p in hits.posts()]
        assert kinds.count("down") == 1 and kinds.count("up") == 1, kinds
        assert all(p["job"] == "f" and p["target"] == f"{server.alias}:{dst}" for p in hits.posts())


def test_a_failed_one_shot_pass_mails_posts_and_pings_fail_then_success(tmp_path: Path, tether_ssh_env, sshd) -> None:
    src = tmp_path / "src"
    make_tree(src, 5, seed=32, hostile=False)
    with smtp_server() as (port, box), http_server() as (url, hits):
        job = f'source = "{src}"\ntargets = ["{ALIAS_DOWN}:{tmp_path / "dst"}"]\n'
        write_job_text(tether_ssh_env, "once", job + alerts_table(port, url))
        tether(["sync", "once"], tether_ssh_env, check_rc=1)
        # the alert is sent before the command exits: no waiting here
        (msg,) = box.messages
        assert "once: pass failed" in str(msg["Subject"]) and ALIAS_DOWN in str(msg["Subject"])
        assert [p["kind"] for p in hits.posts()] == ["error"]
        assert [p for p in hits.paths() if p.startswith("/ping")] == ["/ping/start", "/ping/fail"]
        write_job_text(tether_ssh_env, "once", f'source = "{src}"\ntargets = ["{tmp_path / "dst"}"]\n'
                       + alerts_table(port, url))  # fmt: skip
        tether(["sync", "once"], tether_ssh_env, check_rc=0)
        assert [p for p in hits.paths() if p.startswith("/ping")][2:] == ["/ping/start", "/ping"]
        assert len(box.messages) == 1  # a good pass says nothing but its ping


def test_alert_test_sends_through_every_channel_and_names_the_one_that_fails(tmp_path: Path, tether_env) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with smtp_server() as (port, box), http_server() as (url, hits):
        write_job_text(
            tether_env, "t", f'source = "{src}"\ntargets = ["{tmp_path / "dst"}"]\n' + alerts_table(port, url)
        )
        out = tether(["alert", "test", "t"], tether_env, check_rc=0).stdout
        assert out.count("sent") == 3, out
        assert [str(m["Subject"]) for m in box.messages] == ["[tether] t: test alert"]
        assert [p["kind"] for p in hits.posts()] == ["test"] and "/ping" in hits.paths()
        (Path(tether_env["TETHER_HOME"]) / "config" / "alerts.toml").write_text(
            'webhook = "http://127.0.0.1:9/nobody-listens"\n'
        )
        proc = tether(["alert", "test", "t"], tether_env, check_rc=1)
        assert "FAILED  webhook http://127.0.0.1:9/nobody-listens" in proc.stdout
        assert len(box.messages) == 2  # the job's own channels still went


def test_no_alerts_set_up_says_how(tether_env) -> None:
    proc = tether(["alert", "test"], tether_env, check_rc=2)
    assert "no alerts are set up" in proc.stderr and "alerts.toml" in proc.stderr


def test_a_job_file_with_a_password_in_clear_is_refused_by_every_command(tmp_path: Path, tether_env) -> None:
    f = write_job_text(
        tether_env, "pw",
        f'source = "{tmp_path}"\ntargets = ["{tmp_path / "dst"}"]\n[alerts.email]\nhost = "smtp.example.com"\n'
        'to = "me@example.com"\nuser = "me"\npassword = "hunter2"\n',
    )  # fmt: skip
    for cmd in (["check", "pw"], ["sync", "pw"], ["run", "pw"]):
        proc = tether(cmd, tether_env, check_rc=2)
        assert f"{f}:7: alerts.email.password holds a password in clear text" in proc.stderr
        assert 'password_file = "' in proc.stderr and "password_env" in proc.stderr
        assert "hunter2" not in proc.stderr
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS", "ignore:Session.login_data is deprecated")
def test_mail_over_starttls_or_tls_with_a_login_and_a_private_ca(
    tmp_path: Path, tether_env: dict[str, str], security: str
) -> None:
    """The password comes from the environment variable the job names; the server's certificate
    is checked against the job's ca_file (a self-signed one here), so a wrong CA fails."""
    src = tmp_path / "src"
    src.mkdir()
    cert = self_signed(tmp_path)
    env = dict(tether_env, TEST_SMTP_PW="s3cret pass")
    with smtp_server(security, cert, ("tether", "s3cret pass")) as (port, box):
        mail = (
            f'[alerts.email]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "{security}"\nto = ["a@example.com"]\n'
            f'from = "t@example.com"\nuser = "tether"\npassword_env = "TEST_SMTP_PW"\nca_file = "{cert[0]}"\n'
        )
        write_job_text(env, "t", f'source = "{src}"\ntargets = ["{tmp_path / "dst"}"]\n' + mail)
        tether(["alert", "test", "t"], env, check_rc=0)
        assert [str(m["Subject"]) for m in box.messages] == ["[tether] t: test alert"] and box.logins == ["tether"]

        proc = tether(["alert", "test", "t"], dict(env, TEST_SMTP_PW="wrong"), check_rc=1)
        assert "FAILED  email" in proc.stdout and "535" in proc.stdout  # the server's refusal, said

        (tmp_path / "other").mkdir()
        other = self_signed(tmp_path / "other")  # a certificate the server does not have
        write_job_text(env, "t", f'source = "{src}"\ntargets = ["{tmp_path / "dst"}"]\n'
                       + mail.replace(str(cert[0]), str(other[0])))  # fmt: skip
        proc = tether(["alert", "test", "t"], env, check_rc=1)
        assert "FAILED  email" in proc.stdout and "CERTIFICATE_VERIFY_FAILED" in proc.stdout
        assert len(box.messages) == 1

"""Alerts: a job says when it is unhappy, by email, webhook and heartbeat ping, from the one
event stream every job kind writes.

    alerts/config.py    the settings: a job's `[alerts]` table and the all-jobs `alerts.toml`
    alerts/rules.py     pure: events and the clock in, alerts and pings out (thresholds,
                        flapping, de-duplication, the rate limit)
    alerts/send.py      the channels: SMTP, an HTTP POST of JSON, a heartbeat URL
    alerts/dispatch.py  the thread inside a job's process that feeds the rules and sends

A job without alerts reads config.py only (to find it has none); the rest is never imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.alerts.config import Settings
    from tether.dirs import Dirs
    from tether.endpoints import ReplicaSpec
    from tether.jobs import Job
    from tether.ssh import SshOptions


@contextlib.contextmanager
def watching(
    dirs: Dirs,
    job: str,
    own: Settings | None = None,
    places: dict[str, Sequence[ReplicaSpec]] | None = None,
    ssh: SshOptions | None = None,
    python: str = "auto",
) -> Iterator[None]:
    """While a job runs in this process, its events feed its alerts (the job's own `[alerts]`
    beside `alerts.toml`); on the way out, what is due is sent. `places` maps an event's target
    to the endpoints whose free space `min_free` watches."""
    from tether.alerts.config import NONE, merged

    settings = merged(job, own or NONE, dirs.config)
    if not settings.any:
        yield
        return
    from tether.alerts.dispatch import Dispatcher, free_space
    from tether.events import listen

    space = None
    if places and ssh is not None and settings.min_free is not None:
        where, through = dict(places), ssh

        def space(target: str) -> list[tuple[str, int | None]]:
            return [(str(ep), free_space(ep, through, python)) for ep in where.get(target, ())]

    d = Dispatcher(job, settings, space)
    stop = listen(job, d)
    try:
        yield
    finally:
        stop()
        d.close()


def for_job(dirs: Dirs, job: Job) -> contextlib.AbstractContextManager[None]:
    """`watching` for a loaded job of any kind: its own settings, the endpoints it writes."""
    from tether.ssh import SshOptions

    ssh = SshOptions.from_env(dirs)
    if job.ssh_config:
        ssh = SshOptions(ssh.socket_dir, job.ssh_config)
    places: dict[str, Sequence[ReplicaSpec]] = {str(t): (t,) for t in job.writes()}
    places[""] = job.writes()  # a bisync pass, or a mirror's pass over all its targets
    return watching(dirs, job.name, job.alerts, places, ssh)

"""The alert thread inside a job's process: it listens to the job's events, asks the rules,
and sends; a slow mail server never holds up a transfer, and a job that ends waits a little
for what is still being sent."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from tether.alerts.config import Settings
from tether.alerts.rules import Alert, Ping, Rules
from tether.events import Event

if TYPE_CHECKING:
    from tether.endpoints import ReplicaSpec
    from tether.ssh import SshOptions

log = logging.getLogger("tether")

RETRIES = (1.0, 4.0)  # waits before the second and third try of a send
SPACE_EVERY = 60.0  # a target's free space is asked at most this often (after a pass)
SpaceOf = Callable[[str], "list[tuple[str, int | None]]"]  # event target -> (where, free bytes) each


def deliver(settings: Settings, alert: Alert, retries: Sequence[float] = RETRIES) -> list[tuple[str, str | None]]:
    """Send one alert by every channel: (channel, None if sent else why not) for each."""
    from tether.alerts import send

    out: list[tuple[str, str | None]] = []
    jobs: list[tuple[str, Callable[[], None]]] = [(str(e), partial(send.email, e, alert)) for e in settings.emails]
    jobs += [(f"webhook {u}", partial(send.webhook, u, alert)) for u in settings.webhooks]
    for name, do in jobs:
        out.append((name, tried(do, retries)))
    return out


def tried(do: Callable[[], None], retries: Sequence[float]) -> str | None:
    from tether.alerts import send

    why: str | None = None
    for wait in (0.0, *retries):
        time.sleep(wait)
        try:
            do()
            return None
        except send.SendError as e:
            why = str(e)
    return why


class Dispatcher:
    """Listens to one job's EventLog (see EventLog.listen)."""

    def __init__(self, job: str, settings: Settings, space_of: SpaceOf | None = None) -> None:
        self.job, self.settings, self.space_of = job, settings, space_of
        self.rules = Rules(settings)
        self._queue: queue.Queue[list[Event] | None] = queue.Queue()
        self._space_at: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def __call__(self, events: list[Event]) -> None:
        self._queue.put(events)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is due, then stop (a one-shot pass's alert must leave before the process)."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("alerts: still sending after %.0f s; giving up on what is left", timeout)

    def _run(self) -> None:
        wake: float | None = None
        while True:
            try:
                got = self._queue.get(timeout=None if wake is None else max(0.0, wake - time.time()))
            except queue.Empty:
                got = []
            if got is None:
                break
            alerts: list[Alert] = []
            pings: list[Ping] = []
            for e in got:
                a, p = self.rules.feed(e, time.time())
                alerts += a
                pings += p
                if e.kind == "pass-end" and self.settings.min_free is not None:
                    alerts += self._space(e.target)
            due, wake = self.rules.tick(time.time())
            self._send(alerts + due, pings)

    def _space(self, target: str) -> list[Alert]:
        now = time.time()
        if self.space_of is None or now - self._space_at.get(target, 0.0) < SPACE_EVERY:
            return []
        self._space_at[target] = now
        out = []
        try:
            for where, free in self.space_of(target):
                if free is not None:
                    out += self.rules.space(self.job, where, free, now)
        except Exception as e:  # a target that cannot say its space is the pass's business, not ours
            log.debug("alerts: free space of %s: %s", target, e)
        return out

    def _send(self, alerts: list[Alert], pings: list[Ping]) -> None:
        for a in alerts:
            for channel, why in deliver(self.settings, a):
                if why is None:
                    log.info("alert sent (%s): %s", channel, a.subject)
                else:
                    log.error("alert NOT sent (%s): %s: %s", channel, a.subject, why)
        from tether.alerts import send

        for p in pings:
            for url in self.settings.heartbeats:
                why = tried(partial(send.heartbeat, url, p), RETRIES[:1])
                if why is not None:
                    log.warning("heartbeat %s not pinged: %s", p.what, why)


def free_space(ep: ReplicaSpec, ssh: SshOptions, python: str = "auto") -> int | None:
    """Free bytes where an endpoint writes, asked of its agent; None when the backend keeps no quota."""
    agent = ep.connector(ssh, python)()
    try:
        free = int(agent.call("df").get("free", -1))
    finally:
        agent.close()
    return None if free < 0 else free

"""The overview in Prometheus' text exposition format (version 0.0.4), written by hand: the
format is a few lines of rules, and tether takes no runtime dependency for it.

Counters that live in a running job's status file (files and bytes sent) start again from 0
when the job restarts, which Prometheus' rate() takes as a counter reset; conflicts and errors
are counted in the job's event stream, which drops its oldest file when it rotates (a reset too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tether.service.overview import JobView, Row

Sample = tuple[dict[str, str], float]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _family(out: list[str], name: str, kind: str, help_text: str, samples: Sequence[Sample]) -> None:
    out.append(f"# HELP {name} {_escape_help(help_text)}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}")


def _per_row(views: Sequence[JobView], value: Callable[[Row], float | None]) -> list[Sample]:
    return [
        ({"job": v.job, "target": r.target}, x) for v in views for r in v.rows if (x := value(r)) is not None
    ]  # fmt: skip


# one sample per job target: (name, type, help, the row's value; None: no sample)
PER_TARGET: list[tuple[str, str, str, Callable[[Row], float | None]]] = [
    ("tether_target_up", "gauge", "1 while the job runs and the target is not down or retrying.",
     lambda r: 1.0 if r.up else 0.0),
    ("tether_target_last_success_timestamp_seconds", "gauge",
     "When the target was last left equal to the source (Unix time).", lambda r: r.last_success),
    ("tether_target_lag_seconds", "gauge",
     "0 while the target is caught up, else seconds since it fell behind (running jobs).", lambda r: r.lag_seconds),
    ("tether_target_pending", "gauge", "Changes waiting to be sent to the target (running jobs).",
     lambda r: r.pending),
    ("tether_target_files_sent_total", "counter", "Files sent to the target since the job started.",
     lambda r: r.files_sent),
    ("tether_target_bytes_sent_total", "counter", "Bytes sent to the target since the job started.",
     lambda r: r.bytes_sent),
    ("tether_conflicts_total", "counter", "Conflicts in the job's event stream, per target.", lambda r: r.conflicts),
    ("tether_errors_total", "counter", "Error and refused events in the job's event stream, per target.",
     lambda r: r.errors),
]  # fmt: skip


def exposition(views: Sequence[JobView], watch_limit: int | None) -> str:
    out: list[str] = []
    jobs = [({"job": v.job}, 1.0 if v.running else 0.0) for v in views]
    _family(out, "tether_job_running", "gauge", "1 while the job's process runs.", jobs)
    for name, kind, help_text, value in PER_TARGET:
        _family(out, name, kind, help_text, _per_row(views, value))
    _family(out, "tether_watches", "gauge", "inotify watches the running job holds.",
            [({"job": v.job}, float(v.watches)) for v in views if v.running])  # fmt: skip
    _family(out, "tether_watch_limit", "gauge", "inotify watches one user may hold (the lower of the two limits).",
            [] if watch_limit is None else [({}, float(watch_limit))])  # fmt: skip
    return "\n".join(out) + "\n"

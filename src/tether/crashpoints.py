"""Named crash points: a test seam that kills the process with SIGKILL at a chosen step.

Why: "nothing lost after a crash" is only a claim until a process really dies at every step
that matters, with no handler, finally or flush to tidy up. A test sets TETHER_CRASH_AT=NAME
(or NAME:N, the N-th time the point is reached) and TETHER_CRASH_LOG=FILE; the process that
reaches the point appends NAME to FILE and kills itself with SIGKILL. Never armed unless that
variable is set; it is read once at import, so an unarmed `crashpoint()` is one None check.

The mechanism lives in agent_remote (the far-side agent cannot import tether): a point inside
the agent kills whichever process runs it, tether itself for a local target, the far agent
for an ssh one (the client passes the arming in its hello). Users never set these variables;
they are not part of tether's interface.

POINTS names every point, the job kinds that reach it, and where it is: the test
tests/integration/test_crash_points.py walks it and fails on a point nobody reaches.
"""

from __future__ import annotations

from typing import NamedTuple

from tether.agent_remote import crashpoint

MIRROR, LIVE, BISYNC, LOCATIONS = "mirror", "live", "bisync", "locations"


class Point(NamedTuple):  # not a dataclass: a bisync pass imports nothing else that needs one (8 ms)
    kinds: tuple[str, ...]  # the job kinds whose run reaches it (mirror: one-shot, live: continuous)
    where: str


POINTS: dict[str, Point] = {
    "mirror.planned": Point(
        (MIRROR, LIVE), "mirror.py _pass: the target's guards passed, before rsync changes anything"
    ),
    "mirror.synced": Point(
        (MIRROR, LIVE), "mirror.py _pass: rsync's run ended, before KnownTargets records the target"
    ),
    "agent.keep_version": Point(
        (MIRROR, LIVE, BISYNC, LOCATIONS),
        "agent_remote _keep_version: one old version moved (or linked) into .tether/versions, before "
        "the caller goes on (the next file of a fold or trash, or writing the new data)",
    ),
    "rclone.before_copy": Point(
        (MIRROR, LIVE),
        "rclone_mirror.py _apply (a pass to an rclone remote): deletes done and replaced files moved "
        "to versions, before the copy",
    ),
    "live.full_pass": Point((LIVE,), "apply.py _full_pass: rsync's pass ended, before its kept versions are filed"),
    "live.before_writes": Point((LIVE,), "apply.py apply: a batch's moves and deletes done, before its writes"),
    "live.applied": Point(
        (LIVE,), "live.py worker: a batch or full pass applied, before it is acknowledged (status, waits, events)"
    ),
    "bisync.planned": Point((BISYNC,), "bisync/engine.py _run: the plan is made, before the first action"),
    "bisync.between_actions": Point((BISYNC,), "bisync/engine.py _tick: a group of actions done, before the next"),
    "bisync.transferred": Point(
        (BISYNC,), "bisync/engine.py _copies: files transferred, before their state rows are written"
    ),
    "bisync.conflict_copy": Point(
        (BISYNC,), "bisync/engine.py _conflict: the loser renamed to its conflict copy, before either side's copy"
    ),
    "locations.moved_aside": Point(
        (LOCATIONS,), "locations/execute.py apply: deletions moved to versions, before rsync copies"
    ),
    "locations.copied": Point(
        (LOCATIONS,), "locations/execute.py apply: rsync's copy done, before its kept versions are filed"
    ),
}

__all__ = ["BISYNC", "LIVE", "LOCATIONS", "MIRROR", "POINTS", "Point", "crashpoint"]

"""`tether backup|work|transfer|tree PATH...` and `tether locations`.

The flow is the same for every action: resolve PATHs to sets, pick source and destination
locations, plan, list, ask every question, then re-check and apply; a file that changed
meanwhile sends the remaining destinations back to planning and asking.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, TetherError, UsageError
from tether.events import Event, for_job, pass_end, shown_path
from tether.locations import execute
from tether.locations.config import (
    BACKUP,
    LOCATIONS_JOB,
    WORKING,
    Config,
    Location,
    LocationSet,
    load,
    match_location,
    resolve_path,
)
from tether.locations.plan import Op, Plan, diff, display, render, unread
from tether.locations.prompt import Asker, NeedsAnswer, Stopped
from tether.output import human_bytes, shown

MAX_ROUNDS = 5  # re-plans when files keep changing under us
# source role, destination role, per action
ROLES = {
    "backup": (WORKING, BACKUP),
    "work": (BACKUP, WORKING),
    "transfer": (BACKUP, BACKUP),
    "tree": (BACKUP, WORKING),
}


def handle(args: argparse.Namespace, dirs: Dirs) -> int:
    config = load(dirs)
    if args.command == "locations":
        return _list(config, dirs, as_json=args.json)
    if config is None:
        raise UsageError(f"no locations configured: {dirs.config / 'locations.toml'} does not exist", _EXAMPLE)
    from tether.cli.common import check_quiet_options

    check_quiet_options(args)
    if args.json and args.verbose:
        raise UsageError("--json and -v both say how the run goes", "give one of them")
    asker = Asker.open(yes=args.yes, silent="--json" if args.json else "--quiet" if args.quiet else None)
    said: list[Event] = []  # every destination's events, for --summary and --json
    started = time.monotonic()
    run = _Run(args, config, asker, dirs, said)
    rc = EXIT_ERRORS
    try:
        rc = run.run()
        return rc
    except Stopped as e:
        print(f"tether: {e.message}", file=sys.stderr)
        return EXIT_ERRORS
    finally:
        asker.close()
        if args.json:  # what was planned and done so far, even when it stopped (its error is on stderr)
            doc = {"command": args.command, "dry_run": args.dry_run, "ok": rc == EXIT_OK,
                   "plans": list(run.plans.values()), "events": [e.to_json() for e in said]}  # fmt: skip
            print(json.dumps(doc, indent=1))
        if args.summary:  # a run that stopped or failed is told too, before its error
            from tether.summary import paragraph

            title = shown(" ".join(["tether", args.command, *args.paths]))
            print(paragraph(title, said, time.monotonic() - started), flush=True)


_EXAMPLE = 'write for example:\n  [sets.photos]\n  working = ["~/Pictures"]\n  backup = ["/mnt/disk1/Pictures"]'


@dataclass(frozen=True)
class Job:
    loc_set: LocationSet
    source: Location
    dest: Location
    scopes: tuple[bytes, ...]


class _Run:
    def __init__(self, args: argparse.Namespace, config: Config, asker: Asker, dirs: Dirs, said: list[Event]) -> None:
        self.args, self.config, self.ask, self.dirs, self.state_dir = args, config, asker, dirs, dirs.state
        self.verb: str = args.command
        self.deleting = (args.delete or args.delete_now) and self.verb in ("work", "transfer")
        self.skipped: set[Location] = set()
        self.said = said
        self.quiet = args.quiet or args.json  # --json: the document is the only output
        self.plans: dict[str, dict[str, Any]] = {}  # the last plan for each destination, for --json
        for given in [*args.from_, *args.to]:
            match_location(config, given)  # a typo fails before anything is asked

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"note: {text}", file=sys.stderr)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text)

    def run(self) -> int:
        if (self.args.delete or self.args.delete_now) and not self.deleting:
            self.note(f"{self.verb} never deletes anything: -d/-D ignored")
        by_set: dict[str, list[bytes]] = {}
        for arg in self.args.paths:
            t = resolve_path(self.config, arg)
            by_set.setdefault(t.location.set_name, []).append(t.rel)
        jobs = [job for name, rels in by_set.items() for job in self._jobs(self.config.get(name), rels)]
        return self._loop(jobs)

    def _pick(
        self, loc_set: LocationSet, role: str, given: list[str], flag: str, exclude: Location | None
    ) -> list[Location]:
        """The accessible locations of `role` to use: named by `flag`, the only one, or asked."""
        everyone = [loc for loc in loc_set.locations if loc.role == role and loc != exclude]
        for loc in everyone:
            if not loc.accessible and loc not in self.skipped:
                self.skipped.add(loc)
                self.note(f"{role} {loc} of set {loc_set.name} is not accessible (not mounted?): skipped")
        ready = [loc for loc in everyone if loc.accessible]
        if not ready:
            raise TetherError(
                f"no accessible {role} in set {loc_set.name}"
                + (f" (configured: {', '.join(map(str, everyone))})" if everyone else ""),
                "mount the disk or create the folder, then run again",
            )
        chosen = [loc for loc in (match_location(self.config, g) for g in given) if loc.set_name == loc_set.name]
        for loc in chosen:
            if loc not in ready:
                raise UsageError(f"{flag} {loc} is not an accessible {role} of set {loc_set.name}",
                                 f"choose one of: {', '.join(map(str, ready))}")  # fmt: skip
        if chosen:
            return chosen if self.verb == "backup" and role == BACKUP else chosen[:1]
        if (self.verb == "backup" and role == BACKUP) or len(ready) == 1:
            return ready
        i = self.ask.choose(f"{self.verb} [{loc_set.name}]: which {role}?", [str(loc) for loc in ready], flag)
        return [ready[i]]

    def _jobs(self, loc_set: LocationSet, rels: list[bytes]) -> list[Job]:
        src_role, dst_role = ROLES[self.verb]
        source = self._pick(loc_set, src_role, self.args.from_, "--from", None)[0]
        dests = self._pick(loc_set, dst_role, self.args.to, "--to", source)
        scopes = tuple(sorted({r for r in rels if not any(r.startswith(o + b"/") or not o for o in rels if o != r)}))
        for rel in scopes:
            if rel and not os.path.lexists(os.path.join(os.fsencode(source.path), rel)):
                raise UsageError(f"{display(rel)} does not exist in {src_role} {source}",
                                 "give a PATH that exists in the source")  # fmt: skip
        return [Job(loc_set, source, d, scopes) for d in dests]

    def _plan(self, job: Job) -> Plan:
        src = execute.scan(job.source.path, job.scopes)
        dst = execute.scan(job.dest.path, job.scopes)
        for root, snap in ((job.source, src), (job.dest, dst)):
            for rel in unread(snap):
                self.say(f"skipped {display(rel)} in {root}: cannot be read (Permission denied); left as it is")
        actions = diff(src, dst, delete=self.deleting, dirs_only=self.verb == "tree")
        stamp = execute.new_stamp(job.dest.path)
        return Plan(
            self.verb, job.loc_set.name, job.source.path, job.dest.path, actions, job.loc_set.keep_versions, stamp
        )

    def _approve(self, plan: Plan) -> Plan:
        """Every question for one destination; the answer narrows the plan, never widens it."""
        dest, a = shown(plan.dest), self.args
        n_mod, n_del = plan.count(Op.OVERWRITE), plan.count(Op.DELETE)
        overwrite = a.overwrite or not n_mod or self.ask.confirm(
            f"overwrite these {n_mod} modified files in {dest}?", "-m",
            f"{n_mod} modified files would be overwritten in {dest}",
        )  # fmt: skip
        delete = a.delete_now or not n_del or self.ask.confirm(
            f"delete these {n_del} files in {dest}?", "-D", f"{n_del} files would be deleted in {dest}"
        )  # fmt: skip
        if not overwrite:
            self.say(f"kept {n_mod} modified files in {dest} as they are")
        if not delete:
            self.say(f"kept {n_del} files in {dest} that the source lacks")
        return plan.approved(overwrite=overwrite, delete=delete)

    def _loop(self, jobs: list[Job]) -> int:
        failed, rounds = False, 0
        while jobs:
            plans = [self._plan(j) for j in jobs]
            for p in plans:
                self.say("\n".join(render(p, show_dirs=not self.args.hide_dirs)))
                self.plans[p.dest] = plan_doc(p)
            if self.args.dry_run:
                if self.args.verbose:
                    self._show_commands(plans)
                self.say("dry run: nothing changed")
                return EXIT_OK
            try:
                approved = [self._approve(p) for p in plans]
                if self.args.verbose and any(p.actions for p in approved):
                    self._show_commands(approved)
                    if not self.ask.confirm("run these commands?", "--yes", "-v asks before running"):
                        raise Stopped("stopped: nothing was changed")
            except NeedsAnswer as e:
                if rounds:
                    e.message = e.message.replace("nothing was changed", "nothing more was changed")
                raise
            for i, plan in enumerate(approved):
                changed = execute.recheck(plan)
                if changed:
                    names = ", ".join(display(c) for c in changed[:5])
                    self.note(f"changed since listed in {shown(plan.dest)}: {names}; planning again")
                    jobs, rounds = jobs[i:], rounds + 1
                    if rounds > MAX_ROUNDS:
                        raise TetherError("files keep changing while planning: stopped", "run again when they settle")
                    break
                failed |= not self._apply(plan)
            else:
                jobs = []
        return EXIT_ERRORS if failed else EXIT_OK

    def _apply(self, plan: Plan) -> bool:
        name = f"{LOCATIONS_JOB}{plan.set_name}"
        if not plan.actions:  # nothing to do: no events written, but the summary counts it
            for left in execute.fold_leftovers(plan.dest):  # what an interrupted run kept
                self.note(left)
            self.said += [Event("pass-begin", name, shown(plan.dest)), pass_end(name, shown(plan.dest), True)]
            return True
        from tether import alerts  # alerts.toml's, for every job: a set has no job file of its own

        hooks = self.config.get(plan.set_name).hooks
        where = {"source": plan.source, "target": plan.dest, "action": plan.verb}
        with alerts.watching(self.dirs, name):
            events = for_job(self.state_dir, name)
            before = hooks.run_before(None, **where)
            if not before.go:
                refused = Event("refused", name, shown(plan.dest), detail=before.said or "")
                events.emit(refused)
                self.said.append(refused)
                print(f"FAIL  {shown(plan.dest)}: {before.said}\n      hint: nothing was changed there; fix the "
                      'command, remove `before`, or set before_fails = "continue"', file=sys.stderr)  # fmt: skip
                return False
            if before.said:
                self.note(before.said)
            events.emit(Event("pass-begin", name, shown(plan.dest), detail=f"{plan.verb} from {shown(plan.source)}"))
            out = execute.apply(plan)
            said = plan_events(name, plan, out)
            counts = {"sent": out.copied, "deleted": out.removed, "errors": len(out.errors)}
            failed = hooks.run_after("ok" if out.ok else "error", counts, None, **where)
            if failed:
                said.append(Event("error", name, shown(plan.dest), detail=failed))
            events.emit_all(said)
            self.said += [Event("pass-begin", name, shown(plan.dest)), *said]
        if failed:
            print(f"tether: error: {shown(failed)}", file=sys.stderr)
        for path in out.vanished:
            self.note(f"{shown(path)}: deleted since it was listed: nothing to copy")
        if out.ok and not failed:
            replaced = plan.count(Op.OVERWRITE) + plan.count(Op.DELETE)
            kept = f"; old versions in {shown(os.fsdecode(execute.versions_dir(plan)))}" if plan.keep_versions else ""
            self.say(f"done  {shown(plan.dest)}: {out.copied} copied, {out.removed} removed{kept if replaced else ''}")
            return True
        if out.ok:
            return False
        print(f"FAIL  {shown(plan.dest)}: {shown(out.errors[0])}", file=sys.stderr)
        if out.hint:
            print(f"      hint: {out.hint}", file=sys.stderr)
        return False

    def _show_commands(self, plans: list[Plan]) -> None:
        for p in plans:
            gone = execute.removals(p)
            if gone:
                how = f"move into {shown(os.fsdecode(execute.versions_dir(p)))}" if p.keep_versions else "remove"
                print(f"+ {how}: {len(gone)} entries in {shown(p.dest)} (listed above)")
            if execute.copies(p):
                argv = shlex.join(shown(a) for a in execute.rsync_argv(p))
                print(f"+ {argv}  < {len(execute.copies(p))} paths on stdin, NUL-separated")


def plan_doc(plan: Plan) -> dict[str, Any]:
    """A plan as --json gives it: where from and to, and each change (op: new, modified, delete,
    changed)."""
    changes = [{"op": a.op.value, "path": shown_path(a.rel), "dir": a.is_dir} for a in plan.actions]
    return {"set": plan.set_name, "verb": plan.verb, "source": shown(plan.source), "dest": shown(plan.dest),
            "changes": changes}  # fmt: skip


def plan_events(name: str, plan: Plan, out: execute.Outcome) -> list[Event]:
    """What an applied plan did, in the events every job kind speaks. A failed apply stopped
    somewhere: its path events would claim too much, so it says its error and its counts."""
    dest = shown(plan.dest)
    said: list[Event] = []
    if out.ok:
        kept = "kept in " + shown(os.fsdecode(execute.versions_dir(plan))) if plan.keep_versions else ""
        for a in plan.actions:
            rel = shown_path(a.rel)
            if a.op is Op.DELETE:
                said.append(Event("deleted", name, dest, rel, kept))
            elif a.op in (Op.CREATE, Op.OVERWRITE):
                said.append(Event("sent", name, dest, rel))
                if a.op is Op.OVERWRITE and kept:
                    said.append(Event("kept", name, dest, rel, kept))
    said += [Event("error", name, dest, detail=e) for e in out.errors]
    counts = {"sent": out.copied, "deleted": out.removed, "errors": len(out.errors)}
    return [*said, pass_end(name, dest, out.ok, **counts)]


def _list(config: Config | None, dirs: Dirs, *, as_json: bool) -> int:
    sets: list[dict[str, Any]] = []
    for s in config.sets if config else ():
        rows = []
        for loc in s.locations:
            ok = loc.accessible
            free = shutil.disk_usage(loc.path).free if ok else None
            rows.append({"role": loc.role, "path": shown(loc.path), "accessible": ok, "free_bytes": free})
        sets.append({"name": s.name, "keep_versions": s.keep_versions, "locations": rows})
    file = str(config.file if config else dirs.config / "locations.toml")
    if as_json:
        print(json.dumps({"file": file, "sets": sets}, indent=2))
        return EXIT_OK
    if not sets:
        print(f"no locations configured yet: write {file} (see README)")
    for s_doc in sets:
        print(f"{s_doc['name']} (keep_versions {s_doc['keep_versions']})")
        for r in s_doc["locations"]:
            state = f"accessible   {human_bytes(r['free_bytes'])} free" if r["accessible"] else "not accessible"
            print(f"  {r['role']:<8} {r['path']:<40} {state}")
    return EXIT_OK

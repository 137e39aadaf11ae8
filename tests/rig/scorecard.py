"""The reliability scorecard: one table at the end of a test run, so "nothing lost" is a figure.

The reliability suites (crash points, watch races, hostile input) record, per case, how many
files and bytes they checked and how many were lost or left divergent, through the `scorecard`
fixture, before they assert. Each xdist worker appends its records to a file in a directory the
controller made (TETHER_SCORECARD_DIR); the controller adds the tests' outcomes (passed, failed,
skipped, with the reasons of skips) and prints the table. Lost and divergent must be 0.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV = "TETHER_SCORECARD_DIR"
SUITES = {  # test module -> the scorecard's row
    "test_crash_points": "crash points (kill -9, restart)",
    "test_watch_races": "watch races",
    "test_hostile": "hostile input",
    "test_netns": "network namespaces (delay, loss, cut)",
}


class Card:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def checked(self, contents: Iterable[bytes], *, lost: int, divergent: int) -> None:
        """One case's check: the file contents it looked for, and what was lost or differs."""
        data = list(contents)
        doc = {"nodeid": self.nodeid, "files": len(data), "bytes": sum(map(len, data)), "lost": lost,
               "divergent": divergent}  # fmt: skip
        self._write(doc)

    def same_tree(self, src: Path, dst: Path) -> None:
        """The target holds the source: on the scorecard first, then asserted."""
        from tests.rig.compare import assert_same_tree, snapshot

        want, got = snapshot(src), snapshot(dst)
        lost = sum(1 for rel, data in want.items() if got.get(rel) != data)
        self.checked(want.values(), lost=lost, divergent=0 if want == got else 1)
        missing = sorted(rel for rel, data in want.items() if got.get(rel) != data)
        assert want == got, f"{lost} lost (e.g. {missing[:5]}), {len(got.keys() - want.keys())} extra"  # as recorded
        assert_same_tree(src, dst)

    def note(self, text: str) -> None:
        """A line under the table: how a case was run where it could not be run as asked."""
        self._write({"nodeid": self.nodeid, "note": text})

    def _write(self, doc: dict[str, Any]) -> None:
        where = Path(os.environ[ENV]) if os.environ.get(ENV) else None
        if where is not None:
            with open(where / f"{os.getpid()}.jsonl", "a") as f:
                f.write(json.dumps(doc) + "\n")


@pytest.fixture
def scorecard(request: pytest.FixtureRequest) -> Card:
    return Card(request.node.nodeid)


def _suite(nodeid: str) -> str | None:
    return SUITES.get(Path(nodeid.split("::")[0]).stem)


class Plugin:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.skips: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _suite(report.nodeid) is None:
            return
        if report.skipped:
            self.outcomes[report.nodeid] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skips[report.nodeid] = str(reason).removeprefix("Skipped: ")
        elif report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.when == "call":
            self.outcomes.setdefault(report.nodeid, "passed")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.outcomes:
            return
        records = list(_records())
        for line in table(self.outcomes, records, self.skips):
            terminalreporter.write_line(line)


def _records() -> Iterator[dict[str, Any]]:
    where = os.environ.get(ENV)
    for f in sorted(Path(where).glob("*.jsonl")) if where else []:
        for line in f.read_text().splitlines():
            yield json.loads(line)


def table(outcomes: dict[str, str], records: list[dict[str, Any]], skips: dict[str, str]) -> list[str]:
    """The scorecard's lines: a row per suite and the total, then the reasons of skips."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for nodeid, outcome in outcomes.items():
        row = rows[_suite(nodeid) or "?"]
        row["cases"] += 1
        row[outcome] += 1
    notes = sorted({f"{_suite(r['nodeid']) or '?'}: {r['note']}" for r in records if "note" in r})
    records = [r for r in records if "note" not in r]
    for r in records:
        row = rows[_suite(r["nodeid"]) or "?"]
        for k in ("files", "bytes", "lost", "divergent"):
            row[k] += r[k]
    head = ("suite", "cases", "passed", "failed", "skipped", "files checked", "bytes checked", "lost", "divergent")
    keys = ("cases", "passed", "failed", "skipped", "files", "bytes", "lost", "divergent")
    total = {k: sum(r[k] for r in rows.values()) for k in keys}
    cells = [head, *((name, *(str(rows[name][k]) for k in keys)) for name in sorted(rows)),
             ("total", *(str(total[k]) for k in keys))]  # fmt: skip
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    out = ["", "reliability scorecard (lost and divergent must be 0):"]
    for line in cells:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        out.append("  " + "  ".join(padded))
    out += [f"  skipped {n}: {why}" for n, why in sorted(skips.items())]
    out += [f"  note, {n}" for n in notes]
    return out


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller made the directory
        return
    os.environ[ENV] = tempfile.mkdtemp(prefix="tether-scorecard-")
    config.pluginmanager.register(Plugin(), "tether-scorecard")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and os.environ.get(ENV):
        shutil.rmtree(os.environ.pop(ENV), ignore_errors=True)

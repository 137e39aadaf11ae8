"""A path rsync could not list is excluded by name for the rerun that deletes past it: the rule
must match that name and no other, whatever characters it holds (rsync reads *, ? and [ as
wildcards, and then backslashes as escapes). Checked against a real rsync."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tether.transport.rsync import _unescape, literal_rule

NAMES = [
    b"a*b", b"axb", b"a[b]", b"ab", b"back\\slash", b"back\\\\slash", b"q?", b"qq", b"*", b"x",
    b"new\nline", b" lead", b"trail ", b"-dash", b"caf\xe9", b"**", b"a\\*b",
]  # fmt: skip


def test_rsync_escapes_are_read_back() -> None:
    assert _unescape(b"we[i]rd *\\#012name") == b"we[i]rd *\nname"
    assert _unescape(b"caf\\#351") == b"caf\xe9"
    assert _unescape(b"plain\\slash") == b"plain\\slash"


@pytest.mark.parametrize(
    ("rel", "rule"),
    [(b"plain", "/plain"), (b"back\\slash", "/back\\slash"), (b"a*b", "/a\\*b"), (b"d/a[b]\\c?", "/d/a\\[b]\\\\c\\?")],
)
def test_a_rule_escapes_only_where_rsync_would_read_a_pattern(rel: bytes, rule: str) -> None:
    assert literal_rule(rel) == rule


def test_each_rule_excludes_its_name_and_no_other(tmp_path: Path) -> None:
    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    for n in NAMES:
        with open(os.path.join(src, n), "wb"):
            pass
    for n in NAMES:
        proc = subprocess.run(
            ["rsync", "-a", "--dry-run", "--out-format=%n", f"--exclude={literal_rule(n)}", "--",
             os.fsdecode(src) + "/", os.fsdecode(tmp_path / "dst") + "/"],
            capture_output=True, check=True,
        )  # fmt: skip
        listed = {line for line in proc.stdout.split(b"\n") if line and line != b"./"}
        listed = {_unescape(line) for line in listed}
        assert n not in listed, n
        others = set(NAMES) - {n}
        assert listed == others, (n, others ^ listed)

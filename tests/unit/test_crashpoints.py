"""The crash seam's registry and the calls in the code agree, and the arming parses as documented."""

from __future__ import annotations

import ast
from pathlib import Path

from tether import agent_remote
from tether.crashpoints import POINTS

SRC = Path(agent_remote.__file__).parent


def _called() -> dict[str, list[str]]:
    """Every crashpoint("NAME") call in tether's source: name -> where."""
    out: dict[str, list[str]] = {}
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "crashpoint"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                out.setdefault(str(node.args[0].value), []).append(f"{f.relative_to(SRC)}:{node.lineno}")
    return out


def test_every_registered_point_is_called_once_and_every_call_is_registered() -> None:
    called = _called()
    assert sorted(called) == sorted(POINTS)
    assert {n: w for n, w in called.items() if len(w) > 1} == {}, "one place per point"


def test_arming_names_a_point_and_the_nth_time() -> None:
    assert agent_remote._armed(None) is None and agent_remote._armed("") is None
    assert agent_remote._armed("live.applied") == ("live.applied", 1)
    assert agent_remote._armed("live.applied:3") == ("live.applied", 3)
    assert agent_remote._armed("live.applied:0") == ("live.applied", 1)
    assert agent_remote._armed("live.applied:x") == ("live.applied", 1)
    assert agent_remote.crash_arming() == {}  # never armed unless the variable was set

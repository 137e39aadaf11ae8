"""The gitignore-style engine on its own: pure logic, no files."""

from __future__ import annotations

import pytest

from tether.errors import UsageError
from tether.filters import Filter, parse_rule


def f(*lines: str) -> Filter:
    return Filter.build(ordered=[(ln.startswith("!"), ln.removeprefix("!")) for ln in lines])


@pytest.mark.parametrize(
    ("rules", "path", "is_dir", "excluded"),
    [
        (["*.tmp"], "a.tmp", False, True),
        (["*.tmp"], "deep/er/a.tmp", False, True),
        (["*.tmp"], "a.tmpx", False, False),
        (["build/"], "build", True, True),
        (["build/"], "build", False, False),  # dir-only pattern skips a file of that name
        (["build/"], "x/build", True, True),
        (["/build"], "x/build", True, False),  # anchored
        (["/build"], "build", False, True),
        (["docs/*.md"], "docs/a.md", False, True),
        (["docs/*.md"], "x/docs/a.md", False, False),  # a middle slash anchors
        (["docs/*.md"], "docs/sub/a.md", False, False),  # * does not cross /
        (["a/**/b"], "a/b", False, True),  # ** matches zero directories
        (["a/**/b"], "a/x/y/b", False, True),
        (["**/logs"], "logs", True, True),
        (["**/logs"], "p/q/logs", True, True),
        (["out/**"], "out/x/y", False, True),
        (["out/**"], "out", True, False),
        (["*.log", "!keep.log"], "keep.log", False, False),  # later rule wins
        (["!keep.log", "*.log"], "keep.log", False, True),
        (["file?.c"], "file1.c", False, True),
        (["file[0-3].c"], "file4.c", False, False),
        (["file[!0-3].c"], "file4.c", False, True),
        (["\\#hash"], "#hash", False, True),
        (["with space "], "with space", False, True),  # trailing space dropped, as in git
        ([], ".tether", True, True),  # tether's own metadata is never synced
        ([], ".tether/trash/x", False, True),
        ([], "sub/.tether", True, False),
        (["$(touch pwned)"], "$(touch pwned)", False, True),
    ],
)
def test_gitignore_semantics(rules: list[str], path: str, is_dir: bool, excluded: bool) -> None:
    assert f(*rules).excluded(path, is_dir) is excluded


def test_excluded_parent_cannot_be_reincluded() -> None:
    flt = f("cache/", "!cache/keep")
    assert flt.path_excluded("cache/keep", False)
    assert not flt.path_excluded("other/keep", False)


def test_comments_and_blank_lines_are_not_rules() -> None:
    assert parse_rule("# a comment") is None
    assert parse_rule("   ") is None


def test_rsync_rules_flip_order_and_spell_out_zero_dirs() -> None:
    args = f("*.log", "!keep.log", "a/**/b").rsync_args()
    assert args[0] == "--filter=- /.tether/"
    assert args[1:] == [
        "--filter=- /a/**/b",
        "--filter=- /a/b",
        "--filter=+ keep.log",
        "--filter=- *.log",
    ]


def test_exclude_from_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(UsageError, match="cannot read exclude file"):
        Filter.build(exclude_from=[tmp_path / "missing"])
    p = tmp_path / "ignore"
    p.write_text("# c\n*.o\n!/\n")
    with pytest.raises(UsageError, match=r"ignore:3: bad pattern"):
        Filter.build(exclude_from=[p])

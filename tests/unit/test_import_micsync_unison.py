"""The micsync and unison importers on their own: parsing, mapping, dropped keys, errors with the line.

Every produced file is read back by tether's own validators, so an import never writes a
config tether would refuse.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tether.bisync.config import BisyncJob
from tether.errors import ConfigError, UsageError
from tether.filters import Filter
from tether.importers import Imported, micsync, unison
from tether.jobs import load_job
from tether.locations.config import parse as parse_locations

DATA = Path(__file__).resolve().parent.parent / "data" / "import"


def keys(pairs: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in pairs]


def said(pairs: list[tuple[str, str]], key: str) -> str:
    """What notes/dropped say about a key (all entries joined)."""
    found = [why for k, why in pairs if k == key]
    assert found, f"{key!r} not in {keys(pairs)}"
    return " | ".join(found)


# ----------------------------------------------------------------------------- micsync


def mic(tmp_path: Path, doc: object) -> tuple[str, Path]:
    text = json.dumps(doc, indent=2) if not isinstance(doc, str) else doc
    path = tmp_path / ".micsync.json"
    path.write_text(text)
    return text, path


def test_micsync_readme_example_becomes_two_sets(tmp_path: Path) -> None:
    path = DATA / "micsync.json"
    text = path.read_text()
    assert micsync.looks_like(text, path)
    out = micsync.convert(text, path, "micsync")
    assert out.jobs == {} and out.locations is not None and out.dropped == []
    data = tomllib.loads(out.locations)["sets"]
    first, second = data["my-first-configuration-it-contains-1"], data["my-second-configuration-it-contains-2"]
    assert first == {"working": ["/home/example_user/some_dir"], "backup": ["/example/path"]}
    assert second["working"] == ["/home/example_user/some_dir", "~/other"]
    assert second["backup"] == ["/a/backup", "~/it/may/be/relative/path", "~/my/third/backup"]
    assert "relative" in said(out.notes, "configs[1].backup[1]")
    assert "also in the set" in said(out.notes, "configs[1]")  # the example shares some_dir between sets
    assert "My first CONFIGURATION" in said(out.notes, "configs[0].name")
    config = parse_locations(tmp_path / "locations.toml", out.locations)  # tether's validator takes it
    assert [s.name for s in config.sets] == list(data)


def test_micsync_keys_it_does_not_know_are_dropped_with_why(tmp_path: Path) -> None:
    doc = {
        "version": 2,
        "configs": [
            {"name": "photos", "work": ["/w"], "backup": ["/b"], "comment": "mine"},
            {"name": "empty", "work": [], "backup": ["/c"]},
        ],
    }
    out = micsync.convert(*mic(tmp_path, doc), "x")
    assert keys(out.dropped) == ["version", "configs[0].comment", "configs[1]"]
    assert "no WORKING" in said(out.dropped, "configs[1]")
    assert out.locations is not None
    assert tomllib.loads(out.locations) == {"sets": {"photos": {"working": ["/w"], "backup": ["/b"]}}}
    assert not any(k == "configs[0].name" for k in keys(out.notes))  # the name was already a key


def test_micsync_names_become_distinct_keys(tmp_path: Path) -> None:
    doc = {
        "configs": [
            {"name": "Photos!", "work": ["/w1"], "backup": ["/b1"]},
            {"name": "photos", "work": ["/w2"], "backup": ["/b2"]},
            {"name": "???", "work": ["/w3"], "backup": ["/b3"]},
            {"name": "Zdjęcia z wakacji", "work": ["/w4"], "backup": ["/b4"]},
        ]
    }
    out = micsync.convert(*mic(tmp_path, doc), "fallback")
    assert out.locations is not None
    assert list(tomllib.loads(out.locations)["sets"]) == ["photos", "photos-2", "fallback", "zdjecia-z-wakacji"]
    assert "# micsync: Zdjęcia z wakacji\n[sets.zdjecia-z-wakacji]" in out.locations


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('{\n  "configs": [\n    {"name": "a",\n     "work": ["/w"]\n     "backup": ["/b"]}\n  ]\n}\n', 5, "JSON"),
        ('{\n  "configs": [\n    {"name": "a", "backup": ["/b"]}\n  ]\n}\n', 3, 'has no "work"'),
        (
            '{"configs": [\n {"name": "a", "work": ["/w"], "backup": ["/b"]},\n'
            ' {"name": "b",\n  "work": "/w", "backup": []}]}',
            4,
            "must be a list of paths",
        ),
        ('{"configs": [\n{"name": "a",\n "work": ["/data"],\n "backup": ["/data/bak"]}]}', 4, "overlap"),
    ],
)
def test_micsync_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    _, path = mic(tmp_path, text)
    assert micsync.looks_like(text, path)  # recognised even when broken, so the error is the useful one
    with pytest.raises(ConfigError) as e:
        micsync.convert(text, path, "x")
    assert re.search(rf"^{re.escape(str(path))}:{line}: ", e.value.message), e.value.message
    assert fragment in e.value.message and e.value.hint


def test_micsync_is_recognised_by_content(tmp_path: Path) -> None:
    path = tmp_path / "whatever.conf"
    assert micsync.looks_like('{"configs": [{"name": "a", "work": [], "backup": []}]}', path)
    assert not micsync.looks_like('{"configs": {"a": 1}}', path)
    assert not micsync.looks_like('{"name": "package", "version": "1.0"}', path)
    assert not micsync.looks_like("root = /a\nroot = /b\n", path)
    assert not micsync.looks_like('kind = "bisync"\npath1 = "/a"\n', path)


# ----------------------------------------------------------------------------- unison: patterns


@pytest.mark.parametrize(
    ("kind", "glob", "patterns"),
    [
        ("Name", "core", ["core"]),
        ("Name", "temp.*", ["temp.*"]),
        ("Name", "*.tmp", ["[!.]*.tmp"]),  # a leading * skips dot names in unison
        ("Name", "*~", ["~", "[!.]*~"]),  # ... and may match nothing
        ("Name", ".*~", [".*~"]),
        ("Name", "{CVS,*.cmo}", ["CVS", "[!.]*.cmo"]),
        ("Name", "?x", ["[!.]x"]),
        ("Name", "[ab]b.c", ["[ab]b.c"]),
        ("Name", "[.a]x", ["ax"]),
        ("Name", "[!a]x", ["[!a.]x"]),
        ("Name", "a/b", ["**/a/b"]),
        ("Name", "!bang", ["\\!bang"]),
        ("Name", "a*b*", ["a*b*"]),
        ("Name", "*", ["[!.]*"]),
        ("Name", "x\\*y", ["x\\*y"]),
        ("Path", "a/b", ["/a/b"]),
        ("Path", "*/tmp", ["/[!.]*/tmp"]),
        ("Path", "a/{b,c}/d", ["/a/b/d", "/a/c/d"]),
        ("BelowPath", "build", ["/build"]),
    ],
)
def test_unison_globs_become_gitignore_patterns(kind: str, glob: str, patterns: list[str]) -> None:
    assert unison.glob_patterns(kind, glob) == patterns


@pytest.mark.parametrize(
    ("spec", "excluded", "kept"),
    [
        ("Name *.tmp", ["x.tmp", "d/e/x.tmp", "dir.tmp"], [".x.tmp", ".tmp", "x.tmpx"]),
        ("Name *~", ["a~", "~", "d/b~"], [".a~"]),
        ("Path */tmp", ["a/tmp", "a/tmp"], [".a/tmp", "tmp", "a/b/tmp"]),
        ("Path a/b", ["a/b"], ["b", "x/a/b", "a/bc"]),
        ("Name {CVS,*.cmo}", ["CVS", "x/CVS", "a.cmo"], ["cvs", ".a.cmo"]),
        ("Regex .*\\.bak", ["a.bak", "d/.a.bak"], ["a.bakx"]),
        ("Regex a/b/.*", ["a/b/c", "a/b/c/d"], ["a/b", "a/bc"]),
        ("Regex .*/core", ["a/core", "a/b/core"], ["core"]),
        ("Regex secret\\.txt", ["secret.txt"], ["a/secret.txt", "secretxtxt"]),
    ],
)
def test_translated_patterns_match_what_unison_matches(spec: str, excluded: list[str], kept: list[str]) -> None:
    kind, pattern = unison.pathspec(spec)
    pats = unison.regex_patterns(pattern) if kind == "Regex" else unison.glob_patterns(kind, pattern)
    flt = Filter.build(pats)
    for p in excluded:
        assert flt.excluded(p, False), (spec, pats, p)
    for p in kept:
        assert not flt.excluded(p, False), (spec, pats, p)


@pytest.mark.parametrize("rx", ["a/b/.*\\.ml", "(foo|bar)", ".*", "[0-9]+\\.log", ".*\\w"])
def test_regexes_that_are_not_globs_are_refused(rx: str) -> None:
    with pytest.raises(unison.Untranslatable):
        unison.regex_patterns(rx)


def test_dot_rule_folds_back_when_the_profile_undid_it() -> None:
    pats = [*unison.glob_patterns("Name", "*~"), *unison.glob_patterns("Name", ".*~"), "x"]
    assert unison.simplify(pats)[0] == ["*~", "x"]
    assert unison.simplify(["[!.]*.o", ".*.o"])[0] == ["*.o"]
    assert unison.simplify(["[!.]*.o"])[0] == ["[!.]*.o"]  # alone it keeps the dot rule


# ----------------------------------------------------------------------------- unison: profiles


def prf(tmp_path: Path, body: str, name: str = "work.prf") -> tuple[str, Path]:
    path = tmp_path / name
    path.write_text(body)
    return body, path


def job_of(out: Imported, name: str = "work") -> dict[str, object]:
    assert list(out.jobs) == [name]
    return tomllib.loads(out.jobs[name])


def check_with_tether(tmp_path: Path, out: Imported, name: str = "work") -> None:
    """The job must pass tether's own validator."""
    file = tmp_path / "jobs" / f"{name}.toml"
    file.parent.mkdir(exist_ok=True)
    file.write_text(out.jobs[name])
    assert isinstance(load_job(file, name), BisyncJob)


ROOTS = "root = /srv/a\nroot = /srv/b\n"


def test_manual_basic_profile(tmp_path: Path) -> None:
    path = DATA / "unison" / "basic.prf"
    text = path.read_text()
    assert unison.looks_like(text, path)
    out = unison.convert(text, path, "basic")
    job = job_of(out, "basic")
    assert job["path1"] == "/home/bcpierce" and job["path2"] == "saul:/home/bcpierce"
    assert job["conflict"] == "keep-both" and job["backups_keep"] == 2
    assert job["exclude"] == [
        "temp.*", "*~", "/[!.]*/pilot/backup/Archive_*", "[!.]*.o", "[!.]*.tmp", "/*", "/.netscape/*",
    ]  # fmt: skip
    assert job["include"] == ["/.netscape/", "/.netscape/bookmarks.html", "/common", "/current"]
    assert keys(out.dropped) == [
        "height = 37", "backupdir = /home/bcpierce/backups", "backupprefix = $VERSION.", "backupsuffix = ",
        "diff = diff -y -W 79 --suppress-common-lines",
    ]  # fmt: skip
    assert "ssh" in said(out.notes, "root = ssh://saul//home/bcpierce")
    check_with_tether(tmp_path, out, "basic")


def test_included_profile_next_to_it_is_followed(tmp_path: Path) -> None:
    path = DATA / "unison" / "workingset.prf"
    out = unison.convert(path.read_text(), path, "workingset")
    job = job_of(out, "workingset")
    assert job["path2"] == "saul:/home/bcpierce"  # the roots come from `include common`
    assert job["include"] == ["/Mail/", "/current/", "/Mail/drafts", "/Mail/inbox", "/current/papers"]
    flt = Filter.build(job["exclude"], job["include"])  # type: ignore[arg-type]
    assert not flt.path_excluded("Mail/inbox/1", False) and not flt.path_excluded("current/papers/a.tex", False)
    assert flt.path_excluded("Mail/spam/1", False) and flt.path_excluded("music/a.mp3", False)
    assert flt.path_excluded("current/papers/x.o", False)  # the ignores still apply inside
    assert "followed" in said(out.notes, "include common")
    assert "addprefsto = common (in common)" in keys(out.dropped)


def test_missing_include_is_dropped_and_loops_are_refused(tmp_path: Path) -> None:
    text, path = prf(tmp_path, ROOTS + "include nowhere\ninclude? optional\nsource nofile.prf\n")
    out = unison.convert(text, path, "work")
    assert "import that file too" in said(out.dropped, "include nowhere")
    assert "skipped it too" in said(out.dropped, "include? optional")
    assert "does not exist" in said(out.dropped, "source nofile.prf")
    (tmp_path / "loop.prf").write_text("include work\n")
    text, path = prf(tmp_path, ROOTS + "include loop\n")
    with pytest.raises(ConfigError, match=r"loop\.prf:1: include work includes itself"):
        unison.convert(text, path, "work")


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        (ROOTS + "batch = true\nthis line has no equals sign\n", 4, "garbled line"),
        (ROOTS + "times = maybe\n", 3, "times: expects true or false"),
        (ROOTS + "maxbackups = lots\n", 3, "expects a whole number"),
        (ROOTS + "ignore = Glob *.o\n", 3, "Name, Path, BelowPath or Regex"),
        (ROOTS + "prefer = /elsewhere\n", 3, "names neither root"),
        (ROOTS + "path = /abs\n", 3, "must be relative"),
        (ROOTS + "repeat = often\n", 3, "watch+SECONDS"),
        ("root = /a\nroot = socket://host:4040//b\n", 2, "socket"),
        ("root = /a\nroot = ssh://host:2222//b\n", 2, "ssh port"),
        ("root = /a\nroot = ssh://host:x/b\n", 2, "ill-formed"),
        (ROOTS + "include two words\n", 3, "garbled include"),
    ],
)
def test_unison_errors_name_file_and_line(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    text, path = prf(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        unison.convert(text, path, "work")
    assert e.value.message.startswith(f"{path}:{line}: "), e.value.message
    assert fragment in e.value.message and e.value.hint


def test_a_garbled_line_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "common").write_text("# shared\nbatch = true\noops\n")
    text, path = prf(tmp_path, ROOTS + "include common\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'common'))}:3: garbled"):
        unison.convert(text, path, "work")


def test_ssh_port_hint_says_where_ports_go(tmp_path: Path) -> None:
    text, path = prf(tmp_path, "root = /a\nroot = ssh://me@box:2222//b\n")
    with pytest.raises(ConfigError) as e:
        unison.convert(text, path, "work")
    assert "Host box" in (e.value.hint or "") and "Port 2222" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("roots", "message"),
    [
        ("root = /a\n", "names 1 root"),
        ("", "names 0 root"),
        ("root = ssh://h1//a\nroot = ssh://h2//b\n", "both roots are remote"),
        ("root = /a\nroot = /b\nroot = /c\n", "names 3 root"),
    ],
)
def test_a_job_needs_two_roots_one_of_them_local(tmp_path: Path, roots: str, message: str) -> None:
    text, path = prf(tmp_path, roots + "batch = true\n")
    with pytest.raises(UsageError, match=message) as e:
        unison.convert(text, path, "work")
    assert e.value.hint


@pytest.mark.parametrize(
    ("root", "spec", "note"),
    [
        ("ssh://saul//home/me", "saul:/home/me", "an absolute path"),
        ("ssh://me@saul/notes", "me@saul:notes", "below the remote home"),
        ("ssh://saul", "saul:", "below the remote home"),
        ("ssh://[::1]//srv/x", "[::1]:/srv/x", "an absolute path"),
        ("projects/notes", "~/projects/notes", "relative root"),
        ("/srv/data/", "/srv/data", None),
        ("~/notes", "~/notes", None),
    ],
)
def test_root_forms(tmp_path: Path, root: str, spec: str, note: str | None) -> None:
    text, path = prf(tmp_path, f"root = /local\nroot = {root}\n")
    out = unison.convert(text, path, "work")
    assert job_of(out)["path2"] == spec
    if note:
        assert note in said(out.notes, f"root = {root}")
    else:
        assert f"root = {root}" not in keys(out.notes)


@pytest.mark.parametrize(
    ("prefer", "conflict", "fragment"),
    [
        ("/srv/a", "path1", "wins a conflict"),
        ("/srv/b", "path2", "wins a conflict"),
        ("b", "path2", "wins a conflict"),  # a unique suffix, as unison allows
        ("newer", "newer", "later modification time"),
    ],
)
def test_prefer(tmp_path: Path, prefer: str, conflict: str, fragment: str) -> None:
    text, path = prf(tmp_path, ROOTS + f"prefer = {prefer}\n")
    out = unison.convert(text, path, "work")
    assert job_of(out)["conflict"] == conflict
    assert fragment in said(out.notes, f"prefer = {prefer}")


def test_prefer_older_has_no_equivalent(tmp_path: Path) -> None:
    text, path = prf(tmp_path, ROOTS + "prefer = older\n")
    out = unison.convert(text, path, "work")
    assert job_of(out)["conflict"] == "keep-both"
    assert 'no "older" policy' in said(out.dropped, "prefer = older")


def test_without_prefer_conflicts_keep_both_with_a_note(tmp_path: Path) -> None:
    out = unison.convert(*prf(tmp_path, ROOTS), "work")
    assert job_of(out)["conflict"] == "keep-both"
    assert "unsynced until you chose" in said(out.notes, "prefer (not set)")
    assert "keeps the last 10" in said(out.notes, "backup (not set)")


def test_backups_and_their_count(tmp_path: Path) -> None:
    body = ROOTS + "backup = Name *.doc\nbackupnot = Name tmp.doc\nbackuplocation = local\nmaxbackups = 5\n"
    out = unison.convert(*prf(tmp_path, body), "work")
    assert job_of(out)["backups_keep"] == 5
    assert "not only these" in said(out.notes, "backup = Name *.doc")
    assert "no exceptions" in said(out.dropped, "backupnot = Name tmp.doc")
    assert "inside each replica" in said(out.notes, "backuplocation = local")
    out = unison.convert(*prf(tmp_path, ROOTS + "backups = true\n"), "work")
    assert job_of(out)["backups_keep"] == 2  # unison's default maxbackups
    out = unison.convert(*prf(tmp_path, ROOTS + "backup = Name *\nmaxbackups = 0\n"), "work")
    assert job_of(out)["backups_keep"] == 1  # tether keeps at least one


def test_flags_with_a_meaning_in_tether_get_notes(tmp_path: Path) -> None:
    body = ROOTS + "times = false\nperms = 0\nbatch = true\nauto = true\nrepeat = watch+600\nlinks = false\n"
    out = unison.convert(*prf(tmp_path, body), "work")
    job = job_of(out)
    assert job["interval"] == 600
    assert "time of the copy" in said(out.notes, "times = false")
    assert "synced no permission bits" in said(out.notes, "perms = 0")
    assert "never asks" in said(out.notes, "batch = true")
    assert "no equivalent needed" in said(out.notes, "auto = true")
    assert "tether start" in said(out.notes, "repeat = watch+600")
    assert "always syncs symlinks" in said(out.dropped, "links = false")
    out = unison.convert(*prf(tmp_path, ROOTS + "perms = 0o1777\ntimes = true\n"), "work")
    assert "mode of files and folders" in said(out.notes, "perms = 0o1777")


def test_a_value_set_twice_keeps_the_last_and_says_so(tmp_path: Path) -> None:
    out = unison.convert(*prf(tmp_path, ROOTS + "prefer = /srv/a\nprefer = newer\n"), "work")
    assert job_of(out)["conflict"] == "newer"
    assert "line 4" in said(out.dropped, "prefer = /srv/a")


def test_regex_ignore_is_dropped_unless_it_is_a_plain_glob(tmp_path: Path) -> None:
    body = ROOTS + "ignore = Regex a/b/.*\\.ml\nignore = Regex .*\\.bak\nignore = Path build -> unused\n"
    out = unison.convert(*prf(tmp_path, body), "work")
    assert job_of(out)["exclude"] == ["*.bak", "/build"]
    assert "regular expression" in said(out.dropped, "ignore = Regex a/b/.*\\.ml")
    assert "plain glob" in said(out.notes, "ignore = Regex .*\\.bak")


def test_name_star_is_translated_with_a_warning(tmp_path: Path) -> None:
    out = unison.convert(*prf(tmp_path, ROOTS + "ignore = Name *\n"), "work")
    assert job_of(out)["exclude"] == ["[!.]*"]
    assert "whole replica" in said(out.notes, "ignore = Name *")


def test_ignorenot_re_includes_and_belowpath_covers_the_subtree(tmp_path: Path) -> None:
    body = ROOTS + "ignore = Name *.tmp\nignorenot = BelowPath keep\nignorenot = Name important.tmp\n"
    job = job_of(unison.convert(*prf(tmp_path, body), "work"))
    flt = Filter.build(job["exclude"], job["include"])  # type: ignore[arg-type]
    assert flt.path_excluded("a/x.tmp", False)
    assert not flt.path_excluded("keep/deep/x.tmp", False)
    assert not flt.path_excluded("a/important.tmp", False)


def test_path_keeps_only_those_subtrees_and_scopes_ignorenot(tmp_path: Path) -> None:
    body = ROOTS + (
        "path = docs\npath = src/lib\npath = src/lib/inner\npath = junk\n"
        "ignore = Name junk\nignore = Name *.o\nignorenot = Name keep.o\nignorenot = Path other/keep.o\n"
    )
    out = unison.convert(*prf(tmp_path, body), "work")
    job = job_of(out)
    flt = Filter.build(job["exclude"], job["include"])  # type: ignore[arg-type]
    for kept in ("docs/a", "docs/x/y", "src/lib/a.c", "src/lib/inner/b", "src/lib/keep.o", "docs/q/keep.o"):
        assert not flt.path_excluded(kept, False), kept
    for gone in ("other/a", "src/other.c", "src/app/main.c", "top.txt", "docs/a.o", "keep.o", "other/keep.o"):
        assert flt.path_excluded(gone, False), gone
    assert "never synced it either" in said(out.dropped, "path = junk")
    assert "no effect in unison" in said(out.dropped, "ignorenot = Path other/keep.o (include /other/keep.o)")
    assert "only docs, src/lib synced" in said(out.notes, "path")
    check_with_tether(tmp_path, out)


def test_nothing_is_dropped_quietly(tmp_path: Path) -> None:
    """One line for every preference unison knows, plus a made-up one: each is a job field, a note
    or a dropped key."""
    values = {
        "root": None, "times": "true", "perms": "0", "batch": "true", "auto": "true", "backups": "true",
        "confirmbigdel": "true", "confirmbigdeletes": "false", "maxbackups": "3", "mirrorversions": "3",
        "backupversions": "3", "repeat": "60", "ignore": "Name *.o", "ignorenot": "Name a.o", "path": "docs",
        "backup": "Name *", "mirror": "Name *", "prefer": "newer", "links": "true", "log": "true",
    }  # fmt: skip
    lines = [f"{k} = {values.get(k) or 'x'}" for k in sorted(unison.KNOWN) if k != "root"]
    body = ROOTS + "\n".join([*lines, "frobnicate = 1"]) + "\n"
    out = unison.convert(*prf(tmp_path, body), "work")
    said_keys = {k.split(" = ")[0] for k in keys(out.notes) + keys(out.dropped)}
    missing = [ln for ln in lines if ln.split(" = ")[0] not in said_keys]
    assert missing == []
    assert "not a unison preference" in said(out.dropped, "frobnicate = 1")
    assert job_of(out)["interval"] == 60


def test_unison_is_recognised_by_content(tmp_path: Path) -> None:
    anywhere = tmp_path / "notes.txt"
    assert unison.looks_like("# my sync\nroot = /a\nroot = ssh://h//b\n", anywhere)
    assert unison.looks_like("include common\nbatch = true\nignore = Name *.o\n", anywhere)
    assert unison.looks_like("\ufeffpath = Mail\n", tmp_path / "mail.prf")
    assert not unison.looks_like('kind = "bisync"\npath1 = "/a"\npath2 = "/b"\n', anywhere)  # a tether job
    assert not unison.looks_like('INSTANCE_ID="sync"\nINITIATOR_SYNC_DIR="/a"\n', anywhere)  # osync
    assert not unison.looks_like('wpath = "/var/www"\nrexcludes = [\n  "*.bin",\n]\n', anywhere)  # inosync
    assert not unison.looks_like('source_dir=/home/u/p\ntarget_dir=/srv/p\nsync_owner="joe"\n', anywhere)  # MiMi
    assert not unison.looks_like('{"configs": []}\n', anywhere)  # micsync
    assert not unison.looks_like("[core]\nbare = false\n", anywhere)

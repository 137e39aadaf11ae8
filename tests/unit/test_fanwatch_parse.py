"""fanotify event bytes -> records, and the batch's paths moved back to event time: as data,
no kernel. The bytes are laid out as linux/fanotify.h says (and as the kernel was seen to
write them: see tests/integration/test_fanwatch.py for the real thing)."""

from __future__ import annotations

import struct

import pytest

from tether.fanwatch import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    Named,
    RawEvent,
    as_of_event_time,
    parse_events,
)

ROOT_FH = struct.pack("=Ii", 8, 1) + bytes.fromhex("b727210001000000")
SUB_FH = struct.pack("=Ii", 8, 1) + bytes.fromhex("0102030405060708")
LONG_FH = struct.pack("=Ii", 12, 0x81) + bytes(range(12))


def info(kind: int, fh: bytes, name: bytes | None = None) -> bytes:
    body = struct.pack("=ii", 0x1234, 0x5678) + fh + (name + b"\0" if name is not None else b"")
    body += b"\0" * (-(4 + len(body)) % 4)  # records are padded to 4 bytes
    return struct.pack("=BBH", kind, 0, 4 + len(body)) + body


def event(mask: int, *infos: bytes, fd: int = -1, vers: int = 3) -> bytes:
    rest = b"".join(infos)
    return struct.pack("=IBBHQii", 24 + len(rest), vers, 0, 24, mask, fd, 4242) + rest


def test_create_in_a_directory() -> None:
    buf = event(FAN_CREATE | FAN_CLOSE_WRITE, info(FAN_EVENT_INFO_TYPE_DFID_NAME, ROOT_FH, b"f"))
    assert parse_events(buf) == [RawEvent(FAN_CREATE | FAN_CLOSE_WRITE, ROOT_FH, b"f")]


def test_event_on_a_directory_itself_is_named_dot() -> None:
    buf = event(FAN_ATTRIB | FAN_ONDIR, info(FAN_EVENT_INFO_TYPE_DFID_NAME, SUB_FH, b"."))
    assert parse_events(buf) == [RawEvent(FAN_ATTRIB | FAN_ONDIR, SUB_FH, b".")]


def test_rename_carries_both_sides_in_one_event() -> None:
    buf = event(
        FAN_RENAME | FAN_ONDIR,
        info(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ROOT_FH, b"d"),
        info(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, SUB_FH, b"e"),
    )
    assert parse_events(buf) == [RawEvent(FAN_RENAME | FAN_ONDIR, ROOT_FH, b"d", SUB_FH, b"e")]


def test_several_events_hostile_names_and_long_handles() -> None:
    names = [b"new\nline", b"caf\xe9", b"-rf", b" lead", b"x" * 255, b"a"]
    buf = b"".join(event(FAN_CREATE, info(FAN_EVENT_INFO_TYPE_DFID_NAME, LONG_FH, n)) for n in names)
    assert parse_events(buf) == [RawEvent(FAN_CREATE, LONG_FH, n) for n in names]


def test_overflow_has_no_records() -> None:
    buf = event(FAN_Q_OVERFLOW) + event(FAN_DELETE, info(FAN_EVENT_INFO_TYPE_DFID_NAME, ROOT_FH, b"g"))
    assert parse_events(buf) == [RawEvent(FAN_Q_OVERFLOW), RawEvent(FAN_DELETE, ROOT_FH, b"g")]


def test_unknown_and_child_fid_records_are_skipped() -> None:
    unknown = struct.pack("=BBH", 99, 0, 8) + b"\xff" * 4
    buf = event(
        FAN_CREATE,
        unknown,
        info(FAN_EVENT_INFO_TYPE_DFID_NAME, ROOT_FH, b"f"),
        info(FAN_EVENT_INFO_TYPE_FID, SUB_FH),
    )
    assert parse_events(buf) == [RawEvent(FAN_CREATE, ROOT_FH, b"f")]


def test_dir_fid_without_a_name() -> None:
    buf = event(FAN_ATTRIB | FAN_ONDIR, info(FAN_EVENT_INFO_TYPE_DFID, SUB_FH))
    assert parse_events(buf) == [RawEvent(FAN_ATTRIB | FAN_ONDIR, SUB_FH, None)]


def test_an_fd_is_passed_on_for_the_reader_to_close() -> None:
    assert parse_events(event(FAN_CLOSE_WRITE, fd=7)) == [RawEvent(FAN_CLOSE_WRITE, fd=7)]


def test_empty_buffer() -> None:
    assert parse_events(b"") == []


@pytest.mark.parametrize(
    "buf",
    [
        event(FAN_CREATE, vers=2),  # another layout
        event(FAN_CREATE)[:20],  # torn header
        event(FAN_CREATE, info(FAN_EVENT_INFO_TYPE_DFID_NAME, ROOT_FH, b"f"))[:-4],  # torn body
        struct.pack("=IBBHQii", 24 + 8, 3, 0, 24, FAN_CREATE, -1, 1) + struct.pack("=BBH", 2, 0, 2) + b"\0" * 4,
        struct.pack("=IBBHQii", 24 + 8, 3, 0, 24, FAN_CREATE, -1, 1) + struct.pack("=BBH", 2, 0, 40) + b"\0" * 4,
        # a handle longer than its record
        struct.pack("=IBBHQii", 24 + 20, 3, 0, 24, FAN_CREATE, -1, 1)
        + struct.pack("=BBH", 2, 0, 20)
        + struct.pack("=iiIi", 0, 0, 64, 1),
    ],
)
def test_malformed_input_is_refused(buf: bytes) -> None:
    with pytest.raises(ValueError):
        parse_events(buf)


# -- as_of_event_time --------------------------------------------------------------------

R = "/r"
DIR_RENAME = FAN_RENAME | FAN_ONDIR


def mv(old_dir: str, old: str, new_dir: str, new: str, is_dir: bool = True) -> Named:
    return Named(DIR_RENAME if is_dir else FAN_RENAME, old_dir, old, new_dir, new)


def ev(d: str | None, name: str, mask: int = FAN_CREATE) -> Named:
    return Named(mask, d, name)


CASES: list[tuple[str, list[Named], list[Named]]] = [
    ("nothing to do", [ev(R, "f"), ev(f"{R}/d", "g")], [ev(R, "f"), ev(f"{R}/d", "g")]),
    (
        "event in a dir renamed after it",
        [ev(f"{R}/e", "f"), mv(R, "d", R, "e")],
        [ev(f"{R}/d", "f"), mv(R, "d", R, "e")],
    ),
    (
        "event after the rename keeps the new name",
        [mv(R, "d", R, "e"), ev(f"{R}/e", "f")],
        [mv(R, "d", R, "e"), ev(f"{R}/e", "f")],
    ),
    (
        "deep below the renamed dir",
        [ev(f"{R}/e/x/y", "f"), mv(R, "d", R, "e")],
        [ev(f"{R}/d/x/y", "f"), mv(R, "d", R, "e")],
    ),
    (
        "a sibling sharing the prefix is not below it",
        [ev(f"{R}/e2", "f"), ev(f"{R}/e", "."), mv(R, "d", R, "e")],
        [ev(f"{R}/e2", "f"), ev(f"{R}/d", "."), mv(R, "d", R, "e")],
    ),
    (
        "the entry's own name is never mapped (an empty dir replaced by the rename)",
        [ev(R, "e", FAN_CREATE | FAN_ONDIR), mv(R, "d", R, "e")],
        [ev(R, "e", FAN_CREATE | FAN_ONDIR), mv(R, "d", R, "e")],
    ),
    (
        "a file rename maps nothing",
        [ev(f"{R}/b", "x"), mv(R, "a", R, "b", is_dir=False)],
        [ev(f"{R}/b", "x"), mv(R, "a", R, "b", is_dir=False)],
    ),
    (
        "a chain: each event gets the name of its time",
        [ev(f"{R}/c", "1"), mv(R, "a", R, "b"), ev(f"{R}/c", "2"), mv(R, "b", R, "c"), ev(f"{R}/c", "3")],
        [ev(f"{R}/a", "1"), mv(R, "a", R, "b"), ev(f"{R}/b", "2"), mv(R, "b", R, "c"), ev(f"{R}/c", "3")],
    ),
    (
        "a later rename maps an earlier rename's sides",
        [mv(f"{R}/top2", "a", f"{R}/top2", "b"), mv(R, "top", R, "top2")],
        [mv(f"{R}/top", "a", f"{R}/top", "b"), mv(R, "top", R, "top2")],
    ),
    (
        "a rename inside a renamed dir, then the dir renamed: both undone in order",
        [ev(f"{R}/z/y", "f"), mv(f"{R}/z", "in", f"{R}/z", "y"), mv(R, "x", R, "z")],
        [ev(f"{R}/x/in", "f"), mv(f"{R}/x", "in", f"{R}/x", "y"), mv(R, "x", R, "z")],
    ),
    (
        "moved in from outside: the earlier event is outside",
        [ev(f"{R}/in", "f"), mv("/elsewhere", "d", R, "in")],
        [ev("/elsewhere/d", "f"), mv("/elsewhere", "d", R, "in")],
    ),
    (
        "moved out: the earlier event is inside",
        [ev("/elsewhere/d", "f"), mv(R, "d", "/elsewhere", "d")],
        [ev(f"{R}/d", "f"), mv(R, "d", "/elsewhere", "d")],
    ),
    (
        "the root itself renamed away",
        [ev("/t/r2/d", "f"), ev("/t/r2", "g"), mv("/t", "r", "/t", "r2")],
        [ev("/t/r/d", "f"), ev("/t/r", "g"), mv("/t", "r", "/t", "r2")],
    ),
    (
        "swap, seen from the current names",
        [ev(f"{R}/b", "fa"), ev(f"{R}/a", "fb"), mv(R, "a", R, "t"), mv(R, "b", R, "a"), mv(R, "t", R, "b")],
        [ev(f"{R}/a", "fa"), ev(f"{R}/b", "fb"), mv(R, "a", R, "t"), mv(R, "b", R, "a"), mv(R, "t", R, "b")],
    ),
    (
        "unresolved directories stay unresolved",
        [ev(None, "f"), Named(DIR_RENAME, None, "d", f"{R}/x", "e"), mv(R, "d", R, "e")],
        [ev(None, "f"), Named(DIR_RENAME, None, "d", f"{R}/x", "e"), mv(R, "d", R, "e")],
    ),
    (
        "a rename with one side unresolved maps nothing",
        [ev(f"{R}/e", "f"), Named(DIR_RENAME, None, "d", R, "e")],
        [ev(f"{R}/e", "f"), Named(DIR_RENAME, None, "d", R, "e")],
    ),
    (
        "the filesystem root as the parent",
        [ev("/e", "f"), mv("/", "d", "/", "e")],
        [ev("/d", "f"), mv("/", "d", "/", "e")],
    ),
    (
        "events on the renamed dir itself (name '.')",
        [ev(f"{R}/e", ".", FAN_ATTRIB | FAN_ONDIR), mv(R, "d", R, "e"), ev(f"{R}/e", ".", FAN_ATTRIB | FAN_ONDIR)],
        [ev(f"{R}/d", ".", FAN_ATTRIB | FAN_ONDIR), mv(R, "d", R, "e"), ev(f"{R}/e", ".", FAN_ATTRIB | FAN_ONDIR)],
    ),
    (
        "moved into a new parent, then the parent renamed",
        [ev(f"{R}/q/d", "f"), mv(R, "d", f"{R}/q", "d"), mv(R, "p", R, "q")],
        [ev(f"{R}/d", "f"), mv(R, "d", f"{R}/p", "d"), mv(R, "p", R, "q")],
    ),
]


@pytest.mark.parametrize(("what", "batch", "want"), CASES, ids=[c[0] for c in CASES])
def test_as_of_event_time(what: str, batch: list[Named], want: list[Named]) -> None:
    assert as_of_event_time(batch) == want, what


def test_as_of_event_time_leaves_its_input_alone() -> None:
    batch = [ev(f"{R}/e", "f"), mv(R, "d", R, "e")]
    copy = list(batch)
    as_of_event_time(batch)
    assert batch == copy


def test_named_paths() -> None:
    assert ev(R, "f").path == "/r/f"
    assert ev(R, ".").path == "/r"
    assert ev(None, "f").path is None
    assert ev("/", "f").path == "/f"
    assert mv(R, "a", "/s", "b").new_path == "/s/b"

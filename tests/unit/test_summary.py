"""`--summary`'s paragraph, built from a run's events: the same words for every job kind."""

from __future__ import annotations

from tether.bisync.config import BisyncJob
from tether.bisync.engine import Report
from tether.bisync.runner import report_events
from tether.endpoints import Local
from tether.events import Event, pass_end
from tether.summary import paragraph


def test_a_mirror_with_a_failed_target_says_counts_bytes_trash_and_the_cause() -> None:
    events = [
        Event("pass-begin", "photos", "/mnt/a"),
        Event("pass-begin", "photos", "host2:/srv/photos"),
        pass_end("photos", "/mnt/a", True, sent=312, bytes=48_200_000, deleted=3),
        Event("error", "photos", "host2:/srv/photos", detail="connection refused"),
        pass_end("photos", "host2:/srv/photos", False, errors=1),
    ]
    text = paragraph("tether sync photos", events, 41.2, kept_in=".tether/versions")
    assert text == (
        "tether sync photos: 2 targets, 1 ok, 1 failed; 312 files sent (48.2 MB), 3 deleted (kept in "
        ".tether/versions), 0 conflicts, 41 s. Failed: host2:/srv/photos: connection refused."
    )


def test_a_clean_run_has_no_failed_part_and_no_kept_without_deletes() -> None:
    events = [Event("pass-begin", "j", "/t"), pass_end("j", "/t", True, sent=1)]
    assert paragraph("tether sync j", events, 0.25, kept_in=".tether/versions") == (
        "tether sync j: 1 target, 1 ok, 0 failed; 1 file sent, 0 deleted, 0 conflicts, 0.2 s."
    )


def test_a_refusal_fails_its_target_even_with_a_pass_end_after_it() -> None:
    events = [
        Event("pass-begin", "j", "/t"),
        Event("refused", "j", "/t", detail="would delete 4 files in a target tether never wrote"),
        pass_end("j", "/t", True),
    ]
    assert paragraph("tether sync j", events, 1).endswith(
        "Failed: /t: would delete 4 files in a target tether never wrote."
    )


def test_a_pass_that_died_before_its_targets_fails_every_one_of_them() -> None:
    events = [
        Event("pass-begin", "j", "/a"),
        Event("pass-begin", "j", "/b"),
        Event("error", "j", detail="rsync: not found"),
        pass_end("j", "", False, errors=1),
    ]
    text = paragraph("tether sync j", events, 1)
    assert "2 targets, 0 ok, 2 failed" in text and "Failed: /a: rsync: not found; /b: rsync: not found." in text


def test_a_target_without_a_result_did_not_finish() -> None:
    text = paragraph("tether mirror /s", [Event("pass-begin", "", "/a")], 1)
    assert "1 target, 0 ok, 1 failed" in text and "Failed: /a: did not finish." in text


def test_a_bisync_pass_is_told_in_the_same_words_from_its_report() -> None:
    job = BisyncJob("notes", None, Local("/a"), Local("/b"))
    rep = Report("/a", "/b")
    rep.copied = {"to_path1": 1, "to_path2": 2}
    rep.deleted = {"path1": 0, "path2": 1}
    rep.plan = [{"action": "delete", "to": "path2", "path": "old.txt"}]
    rep.conflicts = [{"path": "x", "copy": "x.conflict-h-1", "policy": "keep-both"}]
    events = [Event("pass-begin", "notes"), *report_events(job, rep)]
    assert paragraph("tether bisync /a /b", events, 2, whole="/a <-> /b") == (
        "tether bisync /a /b: 1 target, 1 ok, 0 failed; 3 files sent, 1 deleted (kept in .tether/versions), "
        "1 conflict, 2.0 s."
    )
    rep.refused = "would delete 80% of path2's files (max_delete 50)"
    refused = paragraph("tether sync notes", report_events(job, rep), 2, whole="/a <-> /b")
    assert refused.startswith("tether sync notes: 1 target, 0 ok, 1 failed; 0 files sent")
    assert refused.endswith("Failed: /a <-> /b: would delete 80% of path2's files (max_delete 50).")


def test_undecodable_names_are_escaped_not_fatal() -> None:
    bad = "/t/\udcff"
    text = paragraph("tether mirror /s", [Event("error", "", bad, detail="no space"), pass_end("", bad, False)], 1)
    assert "Failed: /t/\\xff: no space." in text


def test_an_error_of_the_whole_run_after_its_passes_is_said_once() -> None:
    events = [
        Event("pass-begin", "j", "/a"),
        pass_end("j", "/a", True, sent=1),
        Event("error", "j", detail="after command exited 3"),
    ]
    text = paragraph("tether sync j", events, 1)
    assert "1 target, 1 ok, 0 failed" in text and text.endswith(" Error: after command exited 3.")
    died = [Event("pass-begin", "j", "/a"), Event("error", "j", detail="boom"), pass_end("j", "", False)]
    assert paragraph("tether sync j", died, 1).endswith("Failed: /a: boom.")  # said once, as the target's

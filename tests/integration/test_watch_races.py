"""Watch races (issue 15, item 4): what is written while the first pass runs, a burst that
overflows the kernel's event queue, and a tree moved in from outside while it is still being
written, all reach the target. Each round ends with `tether wait`, whose promise is exactly this:
the target holds what the source held when it was called, compared at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.rig.live import running, status, write_job
from tests.rig.run import tether
from tests.rig.scorecard import Card
from tests.rig.trees import make_tree


@contextmanager
def writing(where: Path, files: int, prefix: str = "w") -> Iterator[threading.Event]:
    """A thread writing `files` files (and rewriting every tenth) into the folder `where` names
    now, through its descriptor, so it goes on writing there when the folder is moved; the event
    is set once it has begun, so the caller can race it."""
    begun, failed = threading.Event(), []
    folder = os.open(where, os.O_RDONLY | os.O_DIRECTORY)

    def put(name: str, text: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=folder)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def run() -> None:
        try:
            for i in range(files):
                put(f"{prefix}{i:05d}.txt", f"{prefix} {i}\n")
                if i % 10 == 9:
                    put(f"{prefix}{i - 5:05d}.txt", f"{prefix} {i - 5} again\n")
                begun.set()
        except OSError as e:
            failed.append(e)
            begun.set()

    t = threading.Thread(target=run)
    t.start()
    try:
        yield begun
    finally:
        t.join()
        os.close(folder)
    assert not failed, failed


def wait(env: dict[str, str], name: str) -> None:
    tether(["wait", name, "--timeout", "300"], env, check_rc=0)


def test_files_written_while_the_first_pass_runs_all_arrive(
    tmp_path: Path, tether_env: dict[str, str], scorecard: Card
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 3000, seed=61, hostile=False)  # a first pass long enough to be raced
    (src / "late").mkdir()
    write_job(tether_env, "race", src, [str(dst)])
    with writing(src / "late", 1500) as begun:
        tether(["start", "race"], tether_env, check_rc=0)  # the writer runs on through the start
        begun.wait()
    with running(tether_env, "race"):
        wait(tether_env, "race")
        scorecard.same_tree(src, dst)


def test_a_burst_past_the_kernels_event_queue_converges(
    tmp_path: Path, tether_env: dict[str, str], scorecard: Card
) -> None:
    """More events than fs.inotify.max_queued_events (16384 by default) while the job is not
    reading (stopped by SIGSTOP, as a suspended or starved process is): the kernel drops the
    rest and says so, and the job passes over the whole tree instead of missing them."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write_job(tether_env, "burst", src, [str(dst)])
    with running(tether_env, "burst"):
        wait(tether_env, "burst")
        pid = status(tether_env, "burst")["pid"]
        burst = src / "burst"
        burst.mkdir()
        wait(tether_env, "burst")  # the folder is watched: its files' events will queue up
        os.kill(pid, signal.SIGSTOP)
        try:
            with writing(burst, limit + 2000):
                pass
        finally:
            os.kill(pid, signal.SIGCONT)
        wait(tether_env, "burst")
        scorecard.same_tree(src, dst)
    log = (Path(tether_env["TETHER_HOME"]) / "state" / "logs" / "burst.log").read_text()
    assert log.count("full pass done") >= 2, log  # the start's, and the one standing in for the lost events


def test_a_tree_moved_in_while_it_is_still_written_converges(
    tmp_path: Path, tether_env: dict[str, str], scorecard: Card
) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    src.mkdir()
    (outside / "tree" / "deep" / "er").mkdir(parents=True)
    write_job(tether_env, "movein", src, [str(dst)])
    with running(tether_env, "movein"):
        wait(tether_env, "movein")
        with writing(outside / "tree" / "deep" / "er", 2000) as begun:
            begun.wait()
            os.rename(outside / "tree", src / "tree")  # the writer goes on in the moved folder
        wait(tether_env, "movein")
        scorecard.same_tree(src, dst)
        assert len(list((dst / "tree" / "deep" / "er").iterdir())) == 2000

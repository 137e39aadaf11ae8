"""Work done in a forked child, so that it runs on another core beside the parent's threads."""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable
from typing import Any

from tether.errors import TetherError


def forked(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Start fn() in a forked child; the returned function waits for its (marshal-able) result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running any of the parent's cleanup
        code = 0
        try:
            os.close(r)
            try:
                data = marshal.dumps((True, fn()))
            except BaseException as e:
                data = marshal.dumps((False, f"{type(e).__name__}: {e}"))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)

    def wait() -> Any:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        if not data:
            raise TetherError("the scan process died")
        ok, result = marshal.loads(data)
        if not ok:
            raise TetherError(f"scan failed: {result}")
        return result

    return wait

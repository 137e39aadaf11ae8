"""A TCP relay that delays what it carries and stalls some of it: netem's delay and loss, where
the kernel has no sch_netem.

Why a stall stands in for loss: TCP hides a lost segment behind a retransmission (at least one
RTO, about 200 ms), and nothing behind it is delivered meanwhile. The relay holds such a chunk,
and so everything after it, for that long. Like netem on the client's end of the link, it acts on
what goes towards the host; the answers come back as they are. Bytes are never dropped or
reordered. A bounded queue per direction keeps the relay from buffering more than the link takes,
so a cut link (the host's veth down) blocks the sender as it would without the relay.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import threading
import time

CHUNK = 16 * 1024  # about a dozen segments: loss is decided per chunk
QUEUED = 64  # chunks in flight per direction (1 MB), then the sender waits
CONNECT_TIMEOUT_S = 10.0  # as ssh's ConnectTimeout: a cut host is not reached at all
RTO_S = 0.2  # Linux's minimum retransmission timeout


class Relay:
    """127.0.0.1:port -> upstream, with `delay` seconds added and a fraction `loss` of chunks
    held one RTO longer, in the direction towards upstream."""

    def __init__(self, upstream: tuple[str, int], *, delay: float, loss: float, seed: int = 0) -> None:
        self.upstream, self.delay, self.loss = upstream, delay, loss
        self._rng = random.Random(seed)  # the same faults on every run with the same seed
        self._rng_lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.stalls = 0  # chunks held for loss so far, for the test's output
        threading.Thread(target=self._accept, name=f"relay :{self.port}", daemon=True).start()

    def close(self) -> None:
        """Stop listening and end every connection (the threads then end on their own)."""
        with self._lock:
            socks, self._socks = [self._server, *self._socks], []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv()
            s.close()

    def _keep(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.append(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self._keep(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            up = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            client.close()  # the client sees the connection closed, as after a timeout
            return
        up.settimeout(None)
        self._keep(up)
        self._pipe(client, up, delay=self.delay, loss=self.loss)
        self._pipe(up, client, delay=0.0, loss=0.0)

    def _lost(self, loss: float) -> bool:
        with self._rng_lock:
            hit = loss > 0 and self._rng.random() < loss
            self.stalls += hit
            return hit

    def _pipe(self, src: socket.socket, dst: socket.socket, *, delay: float, loss: float) -> None:
        """One direction: a reader stamps each chunk with when it may go on, a writer keeps that."""
        chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue(QUEUED)

        def read() -> None:
            try:
                while data := src.recv(CHUNK):
                    chunks.put((time.monotonic() + delay + (RTO_S if self._lost(loss) else 0.0), data))
            except OSError:
                pass
            chunks.put(None)

        def write() -> None:
            try:
                while (item := chunks.get()) is not None:
                    due, data = item
                    time.sleep(max(0.0, due - time.monotonic()))  # the link's delay, not a wait for a condition
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                for s in (src, dst):  # one side failed: so does the connection, both ways
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                while chunks.get() is not None:  # let the reader finish
                    pass

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

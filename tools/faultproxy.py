"""faultproxy: a fault-injecting TCP proxy for loopback tests and benchmarks.

Put it in front of the GCS emulator (or any TCP service) to make a "slow, flaky
cloud": a delay per connection and per request, one bandwidth budget shared by
all connections, and on demand connections cut after a number of bytes.

Python::

    with FaultProxy("127.0.0.1", emulator_port, latency_s=0.03, bandwidth_bps=50e6) as p:
        url = p.url                           # http://127.0.0.1:<port>
        p.drop_next(1, after_bytes=3 << 20)   # cut the connection carrying byte 3 MiB
        p.drop_next(None, after_bytes=0)      # cut every response before its first byte
        p.clear_faults()
        p.stats()                             # ProxyStats(connections, bytes_up, bytes_down, drops)

CLI::

    python -m tools.faultproxy --upstream 127.0.0.1:9023 --port 9024 --latency-ms 30 \
        --bandwidth-mbps 50 [--drop-after BYTES --drop-count K]

Byte counting for drops is global across connections (downstream bytes since the
drop was armed), so "cut after N bytes" is deterministic even when the client
pools connections and sends small metadata requests first. A cut is an abort
(TCP RST): the client sees a connection reset mid-response, like a flaky link.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from dataclasses import dataclass

_CHUNK = 64 << 10


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client
    drops: int = 0


class FaultProxy:
    """A TCP proxy on a background thread with its own asyncio loop.

    All setters are thread-safe and take effect for the next chunk relayed.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        bandwidth_bps: float | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self._want_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._latency = latency_s
        self._rate = bandwidth_bps
        self._free_at = 0.0
        self._drop_left: int | None = 0  # None: every connection
        self._drop_after = 0
        self._drop_counter = 0
        self._stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    # ----------------------------------------------------------- control
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def set_bandwidth(self, bytes_per_s: float | None) -> None:
        with self._lock:
            self._rate = bytes_per_s

    def drop_next(self, count: int | None = 1, *, after_bytes: int = 0) -> None:
        """Cut the connection carrying downstream byte ``after_bytes`` (counted from now,
        across connections), ``count`` times; ``None`` keeps cutting until cleared."""
        with self._lock:
            self._drop_left = count
            self._drop_after = after_bytes
            self._drop_counter = 0

    def clear_faults(self) -> None:
        with self._lock:
            self._drop_left = 0
            self._drop_counter = 0

    def stats(self) -> ProxyStats:
        with self._lock:
            s = self._stats
            return ProxyStats(s.connections, s.bytes_up, s.bytes_down, s.drops)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = ProxyStats()

    # --------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def _run() -> None:
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()  # type: ignore[union-attr]

        self._thread = threading.Thread(target=_run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait()
        fut = asyncio.run_coroutine_threadsafe(self._start_server(), self._loop)
        fut.result(timeout=10)
        return self

    async def _start_server(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._want_port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            if self._server is not None:
                await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._thread = None
            self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- relaying
    async def _pace(self, nbytes: int) -> None:
        with self._lock:
            rate = self._rate
            if not rate:
                return
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + nbytes / rate
            wait = self._free_at - now
        if wait > 0:
            await asyncio.sleep(wait)

    def _cut_point(self, n: int) -> int | None:
        """How many of the next ``n`` downstream bytes to pass before cutting, or None."""
        with self._lock:
            if self._drop_left == 0:
                return None
            room = self._drop_after - self._drop_counter
            if room >= n and not (room == 0 and n > 0):
                self._drop_counter += n
                return None
            if self._drop_left is not None:
                self._drop_left -= 1
            self._drop_counter = 0
            self._stats.drops += 1
            return max(room, 0)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        with self._lock:
            self._stats.connections += 1
            latency = self._latency
        self._conns.add(cwriter)
        uwriter: asyncio.StreamWriter | None = None
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
            self._conns.add(uwriter)
            # A new request starts when the client speaks after the server has; that
            # turn is where per-request latency goes (HTTP keep-alive reuses sockets).
            state = {"server_spoke": False}
            cut = asyncio.Event()

            async def up() -> None:
                try:
                    await _up()
                except (ConnectionError, OSError):
                    cut.set()  # the client went away: tear the pair down

            async def down() -> None:
                try:
                    await _down()
                except (ConnectionError, OSError):
                    cut.set()

            async def _up() -> None:
                while True:
                    data = await creader.read(_CHUNK)
                    if not data:
                        if uwriter.can_write_eof():
                            uwriter.write_eof()
                        return
                    if state["server_spoke"]:
                        state["server_spoke"] = False
                        with self._lock:
                            lat = self._latency
                        if lat > 0:
                            await asyncio.sleep(lat)
                    await self._pace(len(data))
                    with self._lock:
                        self._stats.bytes_up += len(data)
                    uwriter.write(data)
                    await uwriter.drain()

            async def _down() -> None:
                while True:
                    data = await ureader.read(_CHUNK)
                    if not data:
                        if cwriter.can_write_eof():
                            cwriter.write_eof()
                        return
                    state["server_spoke"] = True
                    keep = self._cut_point(len(data))
                    if keep is not None:
                        data = data[:keep]
                    if data:
                        await self._pace(len(data))
                        with self._lock:
                            self._stats.bytes_down += len(data)
                        cwriter.write(data)
                        await cwriter.drain()
                    if keep is not None:
                        cut.set()
                        return

            tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
            cut_wait = asyncio.ensure_future(cut.wait())
            pending = set(tasks) | {cut_wait}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if cut_wait in done or any(t.exception() for t in done if t is not cut_wait):
                    break
                if all(t.done() for t in tasks):
                    break
            for t in pending:
                t.cancel()
            if cut.is_set():
                cwriter.transport.abort()
                uwriter.transport.abort()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (cwriter, uwriter):
                if w is None:
                    continue
                self._conns.discard(w)
                try:
                    w.close()
                except Exception:  # noqa: BLE001, S110 - closing a dead socket
                    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.faultproxy",
        description="Fault-injecting TCP proxy: latency, shared bandwidth cap, connection drops.",
    )
    p.add_argument(
        "--upstream", required=True, help="HOST:PORT to forward to (e.g. the GCS emulator)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    p.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay per connection and per request"
    )
    p.add_argument(
        "--bandwidth-mbps", type=float, default=0.0, help="shared cap in MB/s (0 = none)"
    )
    p.add_argument(
        "--drop-after", type=int, default=None, help="cut a connection after this many bytes"
    )
    p.add_argument(
        "--drop-count", type=int, default=1, help="how many cuts (-1 = every connection)"
    )
    a = p.parse_args(argv)
    host, _, port = a.upstream.rpartition(":")
    proxy = FaultProxy(
        host,
        int(port),
        host=a.host,
        port=a.port,
        latency_s=a.latency_ms / 1000.0,
        bandwidth_bps=a.bandwidth_mbps * 1e6 or None,
    ).start()
    if a.drop_after is not None:
        proxy.drop_next(None if a.drop_count < 0 else a.drop_count, after_bytes=a.drop_after)
    print(f"faultproxy listening on {proxy.url} -> {a.upstream}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

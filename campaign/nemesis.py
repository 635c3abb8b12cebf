"""The network nemesis: a TCP proxy between mqlink and the broker, switchable at run time.

mqlink connects to the proxy; the proxy connects to the broker. The campaign flips the
proxy's mode from its own thread while traffic flows, so every fault hits a live session:

- ``pass``: forward both ways.
- ``cut``: close a connection after N more bytes in one direction (N may fall inside the
  CONNECT/CONNACK exchange of the next connection), with a FIN or a RST.
- ``blackhole``: keep the sockets open and forward nothing (a partition that TCP does not
  notice; only MQTT keepalive can). New connections are accepted and black-holed too.
- ``delay``: hold every chunk for a fixed time before forwarding it.
- ``reset``: RST every open connection (SO_LINGER 0), once.
- ``halfopen``: stop reading from one side, so its writes pile up in kernel buffers.
- ``refuse``: RST new connections at once (used to hold mqlink off while the harness
  re-establishes its subscriber on a restarted broker).

The proxy runs its own asyncio loop in a daemon thread; the control methods are safe to call
from any thread. Every mode change is logged with a timestamp so a schedule can be replayed.
"""

import asyncio
import socket
import struct
import threading
import time

C2S = "c2s"  # mqlink -> broker
S2C = "s2c"  # broker -> mqlink


def _rst(writer):
    """Close a stream with a RST instead of a FIN (SO_LINGER on, timeout 0)."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    except Exception:  # already closed; nothing to do
        pass


def _fin(writer):
    try:
        writer.close()
    except Exception:
        pass


class _Conn:
    def __init__(self, proxy, cr, cw, br, bw):
        self.proxy = proxy
        self.cr, self.cw, self.br, self.bw = cr, cw, br, bw
        self.closed = False
        self.black = False
        self.resume = {C2S: asyncio.Event(), S2C: asyncio.Event()}
        for e in self.resume.values():
            e.set()

    def close(self, rst):
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.bw):
            (_rst if rst else _fin)(w)
        for e in self.resume.values():
            e.set()

    async def pump(self, direction):
        reader = self.cr if direction == C2S else self.br
        writer = self.bw if direction == C2S else self.cw
        p = self.proxy
        try:
            while not self.closed:
                await self.resume[direction].wait()
                if self.closed:
                    break
                data = await reader.read(65536)
                if not data:
                    break
                if self.black or p.blackhole:
                    self.black = True
                    continue
                if p.delay > 0:
                    await asyncio.sleep(p.delay)
                cut = p.cut
                if cut is not None and cut["dir"] == direction and id(self) not in cut["done"]:
                    left = cut["left"].setdefault(id(self), cut["after"])
                    if len(data) >= left:
                        if left:
                            writer.write(data[:left])
                            await writer.drain()
                        cut["done"].add(id(self))
                        p._note(f"cut {direction} after {cut['after']} bytes ({'rst' if cut['rst'] else 'fin'})")
                        if cut["once"]:
                            p.cut = None
                        self.close(cut["rst"])
                        break
                    cut["left"][id(self)] = left - len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            if not self.black:
                self.close(False)


class Proxy:
    """A controllable TCP proxy to ``upstream`` (host, port) on 127.0.0.1:``port``."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.blackhole = False
        self.delay = 0.0
        self.cut = None
        self.refusing = False
        self.connections_total = 0
        self.events = []  # (monotonic time, text)
        self._conns = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def _note(self, text):
        self.events.append((time.monotonic(), text))

    def _run(self):
        asyncio.set_event_loop(self._loop)

        def quiet(loop, context):
            # Pumps still pending when the episode ends are abandoned on purpose.
            if "Task was destroyed" not in context.get("message", ""):
                loop.default_exception_handler(context)

        self._loop.set_exception_handler(quiet)

        async def start():
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _accept(self, cr, cw):
        self.connections_total += 1
        if self.refusing:
            _rst(cw)
            return
        try:
            br, bw = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 5)
        except (OSError, asyncio.TimeoutError):
            _rst(cw)
            return
        conn = _Conn(self, cr, cw, br, bw)
        if self.blackhole:
            conn.black = True
        self._conns.add(conn)
        try:
            await asyncio.gather(conn.pump(C2S), conn.pump(S2C))
        finally:
            self._conns.discard(conn)
            conn.close(False)

    def _call(self, fn):
        done = threading.Event()

        def wrap():
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(wrap)
        done.wait(5)

    # Control (any thread) ---------------------------------------------------------------

    def heal(self):
        """Back to ``pass``: forward, no delay, no cut, readers resumed. Connections that
        were black-holed stay dead (their byte streams lost data); the client must notice."""
        self._note("heal")

        def f():
            self.blackhole = False
            self.delay = 0.0
            self.cut = None
            self.refusing = False
            for c in list(self._conns):
                for e in c.resume.values():
                    e.set()

        self._call(f)

    def set_blackhole(self):
        self._note("blackhole")
        self._call(lambda: setattr(self, "blackhole", True))

    def set_delay(self, seconds):
        self._note(f"delay {seconds * 1000:.0f}ms")
        self._call(lambda: setattr(self, "delay", seconds))

    def arm_cut(self, direction, after, rst, once=True):
        """Cut each connection (the next one only when ``once``) after ``after`` more bytes."""
        self._note(f"arm cut {direction} after {after} bytes rst={rst}")

        def f():
            self.cut = {"dir": direction, "after": after, "rst": rst, "once": once,
                        "left": {}, "done": set()}

        self._call(f)

    def reset_all(self):
        self._note("reset all")

        def f():
            for c in list(self._conns):
                c.close(True)

        self._call(f)

    def set_halfopen(self, direction):
        self._note(f"halfopen: stop reading {direction}")

        def f():
            for c in list(self._conns):
                c.resume[direction].clear()

        self._call(f)

    def set_refusing(self, on):
        self._note(f"refuse new connections: {on}")
        self._call(lambda: setattr(self, "refusing", on))

    def open_connections(self):
        return len(self._conns)

    def close(self):
        def f():
            self._server.close()
            for c in list(self._conns):
                c.close(True)

        self._call(f)
        self._loop.call_soon_threadsafe(self._loop.stop)

"""One download that always ends: a deadline, a minimum rate and a size limit, with progress lines.

A Meter watches one download (a source tarball with all its retries, an artifact cache
object). Its thread checks, a few times a second, the whole download's deadline and the
rate of the last `window` seconds, and says how far the download is every
`progress_every` seconds, also while nothing arrives. When it gives up it shuts down the
sockets of the download's connections, so a read that waits on a server that stalls, or
that trickles headers or chunk lines a byte at a time, returns at once; the reader then
raises GaveUp with the reason instead of the socket's error. The size limit (a source's
`size`, a manifest's archive size, else download_max_size) is checked against the
announced Content-Length before the first byte and after every read, and no read asks
for more than one byte beyond it, so an endless body stops there.

urllib is imported where a connection is opened: the artifact cache builds Limits on
runs that open none.
"""

import threading
import time
from collections import deque
from typing import NamedTuple

from mlbuild import credentials
from mlbuild.errors import MlbuildError

CHUNK = 1 << 20
PROGRESS_EVERY = 10.0  # seconds between two lines of one long download


class Limits(NamedTuple):
    """What every download must keep to (the configuration keys download_*; docs/usage.md)."""

    deadline: float = 3600.0  # seconds for the whole download, its retries and their waits included
    min_rate: int = 1024  # bytes per second, averaged over window; 0: no minimum
    window: float = 30.0  # seconds; also the longest a read waits for a first byte of a new connection
    max_size: int = 4 << 30  # bytes
    progress_every: float = PROGRESS_EVERY

    @classmethod
    def of(cls, config) -> "Limits":
        return cls(float(config.download_timeout), config.download_min_rate, float(config.download_rate_window),
                   config.download_max_size)


class GaveUp(MlbuildError):
    """A download given up on for good: past its deadline, too slow, or larger than allowed. Not retried."""


class TooLarge(GaveUp):
    """The body is, or announces itself, larger than allowed."""


def human(count: float) -> str:
    """A byte count for people: 136 bytes, 12.5 KiB, 3.0 MiB, 4.0 GiB."""
    count = int(count)
    if count < 1 << 10:
        return f"{count} bytes"
    for unit, shift in (("KiB", 10), ("MiB", 20)):
        if count < 1 << (shift + 10):
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count / (1 << 30):.1f} GiB"


def rate(count: float, seconds: float) -> str:
    return f"{human(count / max(seconds, 1e-3))}/s"


class Meter:
    """Watches one download (see the module's doc); use as a context manager around all its attempts.

    limit: the most bytes the body may have (None: the configured max_size); limit_name says where a
    smaller limit comes from ("the recipe's size"). say: where progress lines go; label starts them."""

    def __init__(self, limits: Limits, limit: int | None = None, limit_name: str = "", say=None, label: str = ""):
        self.limits = limits
        if limit is None or limit > limits.max_size:
            self.limit, self.limit_name = limits.max_size, "download_max_size"
        else:
            self.limit, self.limit_name = limit, limit_name or "the expected size"
        self.say, self.label = say, label
        self.received = 0
        self.total: int | None = None
        self.started = self._last_line = time.monotonic()
        self._verdict: GaveUp | None = None
        self._lock = threading.Lock()
        self._sockets: list = []
        self._attempt: float | None = None  # when the running attempt started; None between attempts
        self._samples: deque = deque()  # (time, received) of the running attempt, the last window's
        self._done = threading.Event()
        self._gave_up = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Meter":
        self._thread = threading.Thread(target=self._watch, name=f"meter {self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    # --- the reader's side ------------------------------------------------------------------

    def open(self, request, say=None):
        """urllib's answer to request, on connections this meter can cut; the socket timeout bounded too.

        Redirects never take the request's credentials to another origin (credentials.py); say(line) tells when."""
        import urllib.request

        opener = urllib.request.build_opener(_watching(urllib.request.HTTPHandler, self),
                                             _watching(urllib.request.HTTPSHandler, self),
                                             credentials.redirect_handler(say))
        return opener.open(request, timeout=self.timeout())

    def timeout(self) -> float:
        """A socket's timeout: the watchdog decides, this only bounds a read should its thread not run."""
        return max(0.05, min(2 * self.limits.window, self.limits.deadline - (time.monotonic() - self.started)))

    def new_attempt(self) -> None:
        """A new connection: its rate is measured from now (after its first window)."""
        self.check()
        with self._lock:
            self._attempt = time.monotonic()
            self._samples = deque([(self._attempt, self.received)])

    def restart(self) -> None:
        """The server sends the whole body again (it ignored the Range): count from zero."""
        with self._lock:
            self.received = 0
            self._samples = deque([(time.monotonic(), 0)])

    def expect(self, length: int | None) -> None:
        """The announced length of the rest of the body (Content-Length), if any: refused if beyond the limit."""
        if length is None:
            return
        with self._lock:
            self.total = self.received + length
        if self.total > self.limit:
            raise TooLarge(f"expected at most {human(self.limit)} ({self.limit_name}), "
                           f"the server announced {human(self.total)}")

    def read(self, stream) -> bytes:
        """The next bytes of stream (b"" at its end), counted and checked; never more than one beyond the limit."""
        self.check()
        want = min(CHUNK, self.limit - self.received + 1)
        read1 = getattr(stream, "read1", None)
        chunk = read1(want) if read1 else stream.read(want)  # read1: what has arrived, not a whole chunk's wait
        self.check()
        if chunk:
            self.add(len(chunk))
        return chunk

    def add(self, count: int) -> None:
        with self._lock:
            self.received += count
            self._progress(time.monotonic())
        if self.received > self.limit:
            raise TooLarge(f"expected at most {human(self.limit)} ({self.limit_name}), the server sent more")

    def check(self) -> None:
        """Raise the watchdog's reason if it gave up (the connection's own error is only its consequence)."""
        if self._verdict is not None:
            raise self._verdict

    def pause(self, seconds: float) -> None:
        """Wait between attempts; the deadline still runs."""
        with self._lock:
            self._attempt = None
        self._gave_up.wait(seconds)
        self.check()

    def watch(self, sock):
        """A connection's socket, shut down should the meter give up."""
        with self._lock:
            self._sockets.append(sock)
            given_up = self._verdict is not None
        if given_up:
            _shut(sock)
        return sock

    # --- the watchdog ----------------------------------------------------------------------------

    def _watch(self) -> None:
        limits = self.limits
        tick = max(0.02, min(1.0, limits.window / 10, limits.progress_every or 1.0))
        while not self._done.wait(tick):
            now = time.monotonic()
            with self._lock:
                of = f" of {human(self.total)}" if self.total else ""
                if now - self.started >= limits.deadline:
                    self._give_up(f"expected it within {limits.deadline:g} s (download_timeout), "
                                  f"got {human(self.received)}{of} by then")
                    return
                if self._attempt is not None:
                    self._samples.append((now, self.received))
                    while len(self._samples) > 1 and self._samples[1][0] <= now - limits.window:
                        self._samples.popleft()
                    then, count = self._samples[0]
                    if now - self._attempt >= limits.window and self.received - count < limits.min_rate * (now - then):
                        self._give_up(f"expected at least {human(limits.min_rate)}/s averaged over {limits.window:g} s "
                                      f"(download_min_rate, download_rate_window), got {human(self.received - count)} "
                                      f"in the last {now - then:.0f} s ({human(self.received)}{of} so far)")
                        return
                self._progress(now)

    def _give_up(self, why: str) -> None:
        self._verdict = GaveUp(why)
        self._gave_up.set()
        for sock in self._sockets:
            _shut(sock)

    def _progress(self, now: float) -> None:
        if self.say is None or now - self._last_line < self.limits.progress_every:
            return
        self._last_line = now
        of = f" of {human(self.total)}" if self.total else ""
        self.say(f"{self.label}: {human(self.received)}{of}, {rate(self.received, now - self.started)}")


def _shut(sock) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _watching(handler_class, meter: Meter):
    """An instance of urllib's HTTP(S) handler whose connections report their socket to meter."""

    class Watching(handler_class):
        def do_open(self, http_class, request, **arguments):
            class Watched(http_class):
                def connect(self):
                    super().connect()
                    meter.watch(self.sock)
            return super().do_open(Watched, request, **arguments)

    return Watching()

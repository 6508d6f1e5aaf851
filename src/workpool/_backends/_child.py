"""The loop that runs in a worker process: receive a task, run it, send back its outcome.

It imports only the standard library at start, so that a new worker starts fast (workpool
itself comes with the first task, unless the forkserver preloaded it). The parent speaks first
after the start: the child runs the initializer and answers ``READY`` or the initializer's error,
then serves one task per message until it receives ``STOP`` (or its pipe closes).

Messages, all bytes: a task is its number (8 bytes) then
``dumps((fn, name, args, kwargs, about))``, where a module-level function comes as ``name`` (its
own pickle, which the child unpickles once) with ``fn`` None, and ``about`` is ``(task_seq,
attempt, deadline, timeout, trace_carrier)``. The parent may send tasks while the previous one
runs, and take them back until they start (``Dispatch``): a task taken back gets no reply. A
reply is ``dumps((ok, value_or_error, traceback_text, rss_bytes))``. With ``about``, the task
runs with a ``workpool.current_task()`` of its own (its id, attempt and deadline: ``check()``
works; a cancel arrives as SIGTERM instead) and, given a trace carrier, under the submitter's
trace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from ctypes import c_int64
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

if sys.platform == "linux":
    import ctypes
    import errno

    # Loaded once, in the forkserver where it preloads this module: a few ms less per worker.
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    # The same functions, called *holding* the GIL: for the send and receive that never wait
    # (MSG_DONTWAIT). Letting the GIL go around them, as every Python socket call does, hands
    # it to another of the parent's threads, and this one must wait to get it back.
    _held = ctypes.PyDLL(None, use_errno=True)
    # No argtypes: converting each argument through them costs more than the call itself.
    # Every argument is given as its C type, or as what ctypes passes as one: a Python int as
    # an int (the descriptor, the flags), a buffer or bytes as its address, a size as c_size_t.
    _c_recv = _held.recv
    _c_recv.restype = ctypes.c_ssize_t
    _c_send = _held.send
    _c_send.restype = ctypes.c_ssize_t
else:
    _libc = None

# Plain ints: socket's flags are enum members, and or-ing two of those is a Python call.
_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_SEND_NOW = _DONTWAIT | int(getattr(socket, "MSG_NOSIGNAL", 0))

READY = b"ready"
STOP = b""

_PR_SET_PDEATHSIG = 1

NUMBER = struct.Struct("<q")
"""A task message's number, ahead of its pickle."""


class Dispatch(NamedTuple):
    """Shared with the parent: the number of the last task message read, and those to skip.

    Messages are read in order, so a message numbered ``n`` has been read (and started, unless
    skipped) once ``seen >= n``. The parent takes messages back by writing their numbers in
    ``skip``, at ``n % SKIP_SLOTS``, while ``seen`` is below them; the child skips message ``n``
    if ``skip[n % SKIP_SLOTS] == n``. The parent never has more than ``SKIP_SLOTS`` messages
    unread in the pipe, so two unread numbers never share a slot.
    """

    lock: Any  # a multiprocessing Lock
    seen: Any  # a shared c_int64
    skip: Any  # a shared array of SKIP_SLOTS c_int64

    @classmethod
    def create(cls, context: Any) -> Dispatch:
        return cls(
            context.Lock(),
            context.RawValue(c_int64, 0),
            context.RawArray(c_int64, SKIP_SLOTS),
        )

    def begin(self, number: int) -> bool:
        """Record that message ``number`` was read; False if the parent took it back."""
        with self.lock:
            self.seen.value = number
            return bool(self.skip[number % SKIP_SLOTS] != number)

    def take_back(self, numbers: list[int], wait: float) -> bool:
        """The parent's side: skip messages ``numbers`` (ascending); False if the first is
        read already, or if the lock stays taken ``wait`` seconds (by a child killed while
        holding it?)."""
        if not self.lock.acquire(timeout=wait):
            return False
        try:
            if self.seen.value >= numbers[0]:
                return False
            skip = self.skip
            for number in numbers:
                skip[number % SKIP_SLOTS] = number
            return True
        finally:
            self.lock.release()


SKIP_SLOTS = 64
"""How many messages the parent may have unread in a worker's pipe (see ``Dispatch``)."""


def frame(message: bytes) -> bytes:
    """``message`` as ``Connection.send_bytes`` frames it (under 2 GiB): its length, then it."""
    return _LENGTH.pack(len(message)) + message


Message = bytes | bytearray
"""A message as read: bytes, or the bytearray a long one was read into."""


class Frames:
    """Messages read off a pipe in as few system calls as can be.

    Every system call lets the GIL go, and in the parent, with a proxy thread per worker and a
    submitter, another thread takes it nearly every time: read as ``Connection`` reads (a poll,
    a read for the length, a read for the body), a reply that is already there costs three
    hand-overs, where here one read usually brings it whole (with any other already sent). On
    Linux that read, which never waits, is even made holding the GIL (``_receive_now``).
    Frames are ``Connection``'s, as the other end sends them: a 4-byte big-endian length (-1,
    then 8 bytes of length, past 2 GiB), then the bytes. A long message is read straight into
    a buffer of its size, which is returned as it is (a bytearray).
    """

    __slots__ = (
        "_buffer",
        "_conn",
        "_fd",
        "_filled",
        "_landed",
        "_landing",
        "_long",
        "_poll",
        "_recv",
        "_recv_into",
        "close",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._buffer = bytearray()
        self._long: bytearray | None = None  # a long message being read, and how much is in
        self._filled = 0
        self._recv: Callable[..., bytes] | None = None
        self._recv_into: Callable[..., int] = _no_socket
        self._poll: Callable[[float], bool] = conn.poll
        self._landing: Any = None  # where a read that holds the GIL lands (Linux)
        self._landed = memoryview(b"")  # the same memory, to copy from
        self._fd = -1
        self.close: Callable[[], None] = _nothing
        if not (hasattr(select, "poll") and hasattr(socket, "MSG_DONTWAIT")):
            return
        # A duplex Pipe is a socket pair here: a socket on a copy of the descriptor reads it,
        # with or without waiting, and closes only its copy.
        fd = os.dup(conn.fileno())
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return  # not a socket after all: Connection's own way
        # A default timeout (socket.setdefaulttimeout) makes a new socket non-blocking, and the
        # copy shares that flag with the Connection: both must stay blocking.
        sock.setblocking(True)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        self._recv, self._recv_into = sock.recv, sock.recv_into
        self._poll = lambda timeout: bool(poller.poll(timeout * 1000))
        self.close = sock.close
        if _libc is not None:
            self._fd = sock.fileno()
            self._landing = ctypes.create_string_buffer(_READ_SIZE)
            self._landed = memoryview(self._landing).cast("B")

    def read(self) -> Message:
        """The next message, however long it takes to come; EOFError at the end of the pipe."""
        message = self.next(None)
        assert message is not None
        return message

    def next(self, timeout: float | None) -> Message | None:
        """The next message; None if none came within ``timeout`` seconds; EOFError at the end
        of the pipe. With no timeout, wait as long as it takes."""
        recv = self._recv
        if recv is None:  # no socket (Windows): Connection's own way
            if timeout is not None and not self._poll(timeout):
                return None
            return self._conn.recv_bytes()
        flags = 0 if timeout is None else _DONTWAIT
        while True:
            message = self._take()
            if message is not None:
                return message
            try:
                if self._long is None:
                    if flags and self._landing is not None:
                        received = _receive_now(self._fd, self._landing)
                        self._buffer += self._landed[:received]
                    else:
                        data = recv(_READ_SIZE, flags)
                        received = len(data)
                        self._buffer += data
                else:
                    received = self._recv_into(memoryview(self._long)[self._filled :], 0, flags)
                    self._filled += received
            except BlockingIOError:
                assert timeout is not None
                if not self._poll(timeout):
                    return None
                continue
            if not received:
                raise EOFError

    def _take(self) -> Message | None:
        """A whole message from what was read, if there is one."""
        long = self._long
        if long is not None:
            if self._filled < len(long):
                return None
            self._long = None
            return long
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        (size,) = _LENGTH.unpack_from(buffer)
        start = 4
        if size == -1:
            if len(buffer) < 12:
                return None
            (size,) = _LONG_LENGTH.unpack_from(buffer, 4)
            start = 12
        elif size < 0:
            raise OSError(f"bad message length {size} on the pipe")
        end = start + size
        if len(buffer) < end and size > _READ_SIZE:
            long = self._long = bytearray(size)  # read the rest straight into it
            self._filled = len(buffer) - start
            long[: self._filled] = memoryview(buffer)[start:]
            buffer.clear()
            return None
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:
            message = bytes(view[start:end])
        del buffer[:end]
        return message


def _receive_now(fd: int, landing: Any) -> int:
    """Read what is in socket ``fd`` now into ``landing``, holding the GIL: how many bytes
    (0 at its end); BlockingIOError if nothing is there yet."""
    received = _at_once(_c_recv, fd, landing, _LANDING_SIZE, _DONTWAIT)
    if received < 0:
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    return received


def send_now(fd: int, data: bytes) -> int:
    """Send as much of ``data`` to socket ``fd`` as it takes at once, holding the GIL where the
    platform lets us; how many bytes went (0 if none could go now)."""
    if _libc is None:
        return 0
    return max(0, _at_once(_c_send, fd, data, ctypes.c_size_t(len(data)), _SEND_NOW))


def _at_once(call: Any, *args: Any) -> int:
    """``call`` (a libc send or receive that cannot wait), made again if a signal cut it short;
    its count of bytes, or -1 if it would have had to wait."""
    while True:
        done = int(call(*args))
        if done >= 0:
            return done
        error = ctypes.get_errno()
        if error in (errno.EAGAIN, errno.EWOULDBLOCK):
            return -1
        if error != errno.EINTR:
            raise OSError(error, os.strerror(error))


def _nothing() -> None:
    pass


def _no_socket(*args: object) -> int:
    raise OSError("no socket")


_READ_SIZE = 64 * 1024
if _libc is not None:
    _LANDING_SIZE = ctypes.c_size_t(_READ_SIZE)
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


def main(
    conn: Connection,
    initializer: bytes | None,
    measure_rss: bool,
    start_method: str,
    dispatch: Dispatch,
    warm: tuple[bytes, ...] | None = None,
) -> None:
    """The worker process's entry point. ``warm``: for a spare worker, the functions to
    unpickle once it is ready (see ``_warm_up``)."""
    # Ctrl-C reaches the whole process group; the parent decides what happens to the tasks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if start_method == "forkserver":
        _let_the_forkserver_go()
    _exit_with_parent()
    try:
        if initializer is not None:
            fn, args = pickle.loads(initializer)
            fn(*args)
    except BaseException as exc:
        conn.send_bytes(_reply(False, exc, traceback.format_exc(), 0))
        return
    conn.send_bytes(READY)
    if warm is not None:
        _warm_up(warm)
    _serve(conn, measure_rss, dispatch)


def _warm_up(names: tuple[bytes, ...]) -> None:
    """A spare worker, waiting for a slot: import the modules of the functions ``names``, and
    run a no-op the way a task runs, so that its first task costs what later ones do (a newly
    forked child pays for every first touch: some 0.3 ms more for a no-op on two cores)."""
    for name in names:
        with contextlib.suppress(Exception):  # gone since: a task that sends it fails as usual
            named(name)
    _reply(True, _run_as_task(int, (), {}, (0, 0, None, None, None)), None, 0)


def _serve(conn: Connection, measure_rss: bool, dispatch: Dispatch) -> None:
    frames = Frames(conn)
    recv, send = frames.read, conn.send_bytes
    number_size = NUMBER.size
    try:
        while True:
            try:
                message = recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if message == STOP:
                return
            if not dispatch.begin(NUMBER.unpack_from(message)[0]):
                continue
            tb = None
            try:
                fn, name, args, kwargs, about = pickle.loads(memoryview(message)[number_size:])
                if name is not None:
                    fn = named(name)
                value, ok = _run_as_task(fn, args, kwargs, about), True
            except BaseException as exc:
                value, ok, tb = exc, False, traceback.format_exc()
            send(_reply(ok, value, tb, _rss() if measure_rss else 0))
            del value, message  # free the task's data before waiting for the next
    finally:
        frames.close()


_FUNCTIONS: dict[bytes, Any] = {}
"""The module-level functions sent by name so far, by their pickles."""

_FUNCTIONS_MAX = 1024


def named(name: bytes) -> Any:
    """The module-level function whose pickle is ``name``, unpickled once (``pickle`` imports
    the module for each one it reads)."""
    fn = _FUNCTIONS.get(name)
    if fn is None:
        fn = pickle.loads(name)
        if len(_FUNCTIONS) >= _FUNCTIONS_MAX:
            _FUNCTIONS.clear()
        _FUNCTIONS[name] = fn
    return fn


def _run_as_task(
    fn: Any, args: Any, kwargs: Any, about: tuple[int, int, float | None, float | None, Any]
) -> Any:
    """Call ``fn`` with a ``current_task()`` of its own (and the submitter's trace, if sent)."""
    task_class, current = _task_api()
    seq, attempt, deadline, timeout, carrier = about
    if deadline is None and timeout is not None:  # sent ahead: its time starts now
        deadline = time.monotonic() + timeout
    task = task_class(fn, args, kwargs, _options(timeout))
    task._seq, task.attempts, task._deadline = seq, attempt, deadline
    token = current.set((task, attempt))
    try:
        if carrier:
            from ..observe.otel import attached  # only sent when OpenTelemetry is in use

            with attached(carrier):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    finally:
        current.reset(token)


@functools.cache
def _task_api() -> tuple[Any, Any]:
    """workpool's Task and its current-task variable, imported once (an import statement in
    ``_run_as_task`` would cost more than the rest of it)."""
    from .._task import Task, _current  # workpool itself: preloaded by the forkserver

    return Task, _current


@functools.lru_cache(maxsize=64)
def _options(timeout: float | None) -> Any:
    """The options a task's context reports: only its timeout travels (built once per value)."""
    from .._options import TaskOptions

    return TaskOptions(timeout=timeout)


def _reply(ok: bool, value: Any, tb: str | None, rss: int) -> bytes:
    """Pickle an outcome; an outcome that cannot be pickled becomes an error that can."""
    try:
        return pickle.dumps((ok, value, tb, rss), pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:
        what = "result" if ok else f"exception {type(value).__name__}: {value}"
        error = pickle.PicklingError(
            f"cannot pickle the task's {what} to send it back: {type(exc).__name__}: {exc}"
        )
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return pickle.dumps((False, error, (tb or "") + text, rss), pickle.HIGHEST_PROTOCOL)


def _rss() -> int:
    """This process's resident set size in bytes (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _exit_with_parent() -> None:
    """Die when the parent dies, even in the middle of a task that never looks at its pipe."""
    parent = os.getppid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed


def _let_the_forkserver_go() -> None:
    """Drop this child's copy of the forkserver's lifeline.

    The forkserver hands each child the write end of the pipe it watches to learn that the pool's
    process died. Held by the workers, that pipe never closes, so the forkserver (our parent
    under that start method, whose death signals us) would outlive the pool and keep us alive.
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)

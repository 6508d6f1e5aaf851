"""Processes as workers.

One worker is a child process plus a proxy thread in the parent that owns the child's pipe::

    pool (WorkerHost) <── take/done/lost ── proxy thread ══ Pipe ══ child process (_child.main)
                                              │ parks on its Parker when idle
    timer / cancel ── interrupt ──> SIGTERM, then SIGKILL after ``terminate_grace``

The proxy runs the same loop as a thread worker, except that "run the task" means: pickle it,
send it, wait for the reply. A child that dies under a task (EOF on the pipe) fails only that
task with ``WorkerCrashed``; the pool starts a replacement. A task past its timeout, or a running
task that is cancelled, is stopped by killing its child. The child is started *by its proxy
thread*, so that the Linux parent-death signal, which follows the thread that forked, stays armed
exactly as long as the proxy owns the child.

The child's side is ``_child``; the parent's hold on each child (its pipe, the tasks sent to it,
how it is stopped) is ``_handle``; how a task is pickled for it, ``_pickling``.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import multiprocessing
import multiprocessing.process
import multiprocessing.util  # its exit hook is registered before ours: see _kill_leftovers
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

from .._engine import RETIRE, Next, SlotState, WorkerSlot
from .._engine.scheduler import AHEAD_MAX
from .._errors import WorkerCrashed
from .._events import logger
from .._task import Task
from ..observe.carrier import is_traced
from . import _child, _forkserver, _pickling
from ._handle import AHEAD_MAX_BYTES, ChildHandle
from ._pickling import RemoteTraceback, dumps, task_message
from .base import Backend, Interruption, WorkerHost, join_threads

_TICK = 0.25
"""How often a proxy waiting for a reply checks its child's health and kill deadline."""

_NUMBER_SIZE = _child.NUMBER.size

_SPARE_PATIENCE = 0.002
"""Seconds a worker idle after a task waits for more work before it starts the next spare."""

_live_backends: weakref.WeakSet[ProcessBackend] = weakref.WeakSet()

_fork_lock = threading.Lock()
"""Held by a pool that forks a worker (the "fork" start method), from the moment the worker's
pipe opens until the parent has closed the child's end: a worker forked meanwhile, by any
pool, would inherit that end, and the first one's death would not read as EOF (only the
``is_alive`` check of ``_receive`` would find it)."""

if hasattr(os, "register_at_fork"):
    # A worker is forked while the lock is held: the child's copy, held by no thread of its
    # own, is made free again (as concurrent.futures does with its locks), else a fork pool the
    # child starts (a task that starts one) would wait on it forever.
    os.register_at_fork(after_in_child=_fork_lock._at_fork_reinit)  # type: ignore[attr-defined]


@functools.cache
def _start_methods() -> tuple[str, ...]:
    return tuple(multiprocessing.get_all_start_methods())  # the platform's: they never change


_context = functools.cache(multiprocessing.get_context)


class _Spare:
    """A worker started before any slot needs it: its proxy thread boots the child, then
    waits for ``start`` to give it a slot (``None``: stop)."""

    __slots__ = ("child", "given", "key", "slot", "thread")

    def __init__(self, key: int) -> None:
        self.child = ChildHandle()
        self.key = key  # its proxy's key in ``_proxies`` until it has a slot: below zero
        self.given = threading.Event()
        self.slot: WorkerSlot | None = None
        self.thread: threading.Thread | None = None


class ProcessBackend(Backend):
    """Workers are child processes, supervised by one proxy thread each.

    A pool that loses its workers (a task's ``timeout``, a running task cancelled, a crash) keeps
    one *spare* worker started ahead (``spare_worker=False``: none), so that the worker that
    replaces the next one lost is ready at once instead of after a process start (milliseconds).
    ``start`` hands a slot to the spare; the next spare starts once a worker has stayed idle a
    moment after a task, or when a task with a timeout starts: never on the way to failing a
    task and replacing its worker, nor to the result of the task just done.
    """

    name = "process"

    def __init__(
        self,
        host: WorkerHost,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: str | None = None,
        max_memory_per_worker: int | None = None,
        terminate_grace: float = 1.0,
        spare_worker: bool = True,
    ) -> None:
        super().__init__(host, initializer=initializer, initargs=initargs)
        methods = _start_methods()
        # forkserver where the platform has it, else spawn: never fork (see docs/processes.md)
        method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if method not in methods:
            known = ", ".join(methods)
            raise ValueError(f"unknown start_method {method!r}; this platform has {known}")
        if max_memory_per_worker is not None and (
            not isinstance(max_memory_per_worker, int) or max_memory_per_worker <= 0
        ):
            raise ValueError(
                f"max_memory_per_worker must be a number of bytes > 0, not "
                f"{max_memory_per_worker!r}"
            )
        if not terminate_grace >= 0:
            raise ValueError(f"terminate_grace must be >= 0, not {terminate_grace!r}")
        if not isinstance(spare_worker, bool):
            raise ValueError(f"spare_worker must be True or False, not {spare_worker!r}")
        self.start_method = method
        self.max_memory = max_memory_per_worker
        self.terminate_grace = terminate_grace
        self._context = _context(method)
        if method == "forkserver":
            _forkserver.preload()
        self._initializer = (
            None if self.initializer is None else dumps((self.initializer, self.initargs))
        )
        self._proxies: dict[int, threading.Thread] = {}
        self._children: dict[int, ChildHandle] = {}
        # The spare worker: wanted once the pool runs a timed task or loses a worker (never,
        # if not allowed); at most one at a time; none once the pool closed.
        self._spare_allowed = spare_worker
        self._spare_wanted = False
        self._spare: _Spare | None = None
        self._starting = threading.Lock()
        """Guards the spare; and held while a proxy thread is listed and started, so that
        ``join`` never finds one it cannot join yet (a replacement may start as the pool shuts
        down)."""
        self._spares = itertools.count(1)
        self._closed = False

    @staticmethod
    def default_workers() -> int:
        return os.cpu_count() or 1

    def start(self, slot: WorkerSlot) -> None:
        spare = self._claim_spare()
        if spare is not None:
            assert spare.thread is not None
            slot.handle = spare.child
            self._proxies[slot.id] = spare.thread
            self._children[slot.id] = spare.child
            self._proxies.pop(spare.key, None)
            self._children.pop(spare.key, None)
            spare.slot = slot
            spare.given.set()
            return  # the next spare starts once a worker is idle (see _serve)
        child = slot.handle = ChildHandle()
        proxy = threading.Thread(
            target=self._proxy, args=(slot,), name=f"workpool-process-{slot.id}", daemon=True
        )
        with self._starting:
            self._proxies[slot.id] = proxy
            self._children[slot.id] = child
            _live_backends.add(self)  # it has a child to kill at exit, should one be left
            try:
                proxy.start()
            except BaseException:
                del self._proxies[slot.id], self._children[slot.id]  # nothing to join or kill
                slot.handle = None
                raise

    def wake(self, slot: WorkerSlot) -> None:
        slot.handle.parker.wake()

    def recall(self, slot: WorkerSlot, task: Task[Any]) -> bool:
        child: ChildHandle = slot.handle
        with child.lock:
            return child.recall(task)

    def interrupt(self, slot: WorkerSlot, task: Task[Any], why: Interruption) -> None:
        child: ChildHandle = slot.handle
        with child.lock:
            if child.current is not task or child.stopping is not None:
                return  # not sent yet (the proxy checks the task's flags), or already ended
            if child.sent and not child.recall(child.sent[0][0]):
                # The child is done with it and runs a task sent after it: its reply is on its
                # way. (Taken back, those tasks go back to the pool when it hears of the stop.)
                return
            child.stopping = why
            child.kill_at = time.monotonic() + self.terminate_grace
        child.signal(kill=False)  # the proxy sends SIGKILL if SIGTERM is ignored
        # From now on a spare stands by; the first starts once a worker is idle (see _serve),
        # not here, on the way to failing the task and starting a replacement.
        self._spare_wanted = self._spare_allowed

    def join(self, timeout: float | None) -> bool:
        return join_threads(self._proxies, self._starting, timeout)

    def kill_all(self) -> None:
        """Kill every child at once (the interpreter is exiting)."""
        for child in list(self._children.values()):
            child.signal(kill=True)

    # -- the proxy thread ---------------------------------------------------------------------

    def _proxy(self, slot: WorkerSlot) -> None:
        child: ChildHandle = slot.handle
        try:
            if self._boot(slot, child):
                self._serve(slot, child)
        except Exception as fault:  # the pool's own, not a task's
            self.failed(slot, fault, "proxy thread", child.current or slot.task, child.pid)
        finally:
            child.stop(self.terminate_grace)
            self._children.pop(slot.id, None)
            self._proxies.pop(slot.id, None)

    def _boot(self, slot: WorkerSlot, child: ChildHandle) -> bool:
        """Start the child and wait for its initializer; False if the worker never came up."""
        error = self._start_child(child)
        if error is not None:
            self.host.broken(slot, error)
        return error is None

    def _start_child(
        self, child: ChildHandle, warm: tuple[bytes, ...] | None = None
    ) -> BaseException | None:
        """Start ``child`` and wait for its initializer: None, or why it never came up.

        ``warm``: a spare's, the functions (pickled by name) for it to unpickle once it is up,
        importing their modules before a task needs them (``_child._warm_up``)."""
        try:
            self._launch(child, warm)
            assert child.conn is not None
            reply = child.conn.recv_bytes()
        except BaseException as exc:
            if child.process is None and isinstance(exc, Exception):  # fork, pipe, forkserver
                error = WorkerCrashed(reason=f"not started: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                return error
            if isinstance(exc, (EOFError, OSError)):
                return WorkerCrashed(pid=child.pid, exitcode=child.reap(), reason="at start-up")
            return exc
        if reply != _child.READY:
            _, error, tb, _ = pickle.loads(reply)
            error.__cause__ = RemoteTraceback(tb)
            return error  # type: ignore[no-any-return]
        return None

    # -- the spare worker ---------------------------------------------------------------------

    def _want_spare(self) -> None:
        """This pool loses workers: have a spare ready for the next replacement from now on."""
        if self._spare_allowed:
            self._spare_wanted = True
            self._keep_spare()

    def _keep_spare(self) -> None:
        """Start a spare worker if one is wanted and none is there."""
        if not self._spare_wanted:
            return
        with self._starting:  # listed and started under it: see join
            if self._spare is not None or self._closed:
                return
            spare = _Spare(-next(self._spares))
            spare.thread = threading.Thread(
                target=self._stand_by, args=(spare,), name="workpool-process-spare", daemon=True
            )
            self._proxies[spare.key] = spare.thread
            self._children[spare.key] = spare.child
            try:
                spare.thread.start()
            except Exception:  # no thread to be had: the next replacement starts as usual
                del self._proxies[spare.key], self._children[spare.key]
                logger.exception("workpool could not start a spare worker")
                return
            self._spare = spare

    def _claim_spare(self) -> _Spare | None:
        """The spare worker, for a slot to start (booted or still booting), if there is one."""
        if self._spare is None:
            return None
        with self._starting:
            spare, self._spare = self._spare, None
        return spare

    def close(self) -> None:
        """The pool is closed: the spare, if any, stops, and none starts any more."""
        with self._starting:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.given.set()  # with no slot: stop

    def _wait_for_slot(self, spare: _Spare) -> WorkerSlot | None:
        """The slot ``spare`` is to serve; None: stop (the pool closed, or an autoscaling pool
        found no use for it within ``idle_timeout``, as for an idle worker)."""
        if not spare.given.wait(self.host.park_timeout()):
            with self._starting:
                if self._spare is spare:
                    self._spare = None  # a worker going idle starts another
                    return None
            spare.given.wait()  # claimed just now: its slot is on its way
        return spare.slot

    def _stand_by(self, spare: _Spare) -> None:
        """The spare's proxy thread: boot, wait for a slot, then serve it as any proxy."""
        child = spare.child
        slot = None
        try:
            try:  # whatever fails here, it waits: a spare that start() takes must serve
                # Warm: it imports the modules of the functions sent so far, as it waits.
                error = self._start_child(child, warm=_pickling.sent_names())
            except Exception as fault:
                error = fault
            slot = self._wait_for_slot(spare)
            if slot is None:
                return
            if error is not None or not child.alive():
                # It never came up, or died as it waited (the OOM killer?): start another as
                # any new worker, whose failure is the pool's to hear of.
                child.stop(0.0)
                if not self._boot(slot, child):
                    return
            self._serve(slot, child)
        except Exception as fault:  # the pool's own, not a task's
            if slot is None:
                logger.exception("workpool: the spare worker failed")
            else:
                self.failed(slot, fault, "proxy thread", child.current or slot.task, child.pid)
        finally:
            child.stop(self.terminate_grace)
            key = spare.key if slot is None else slot.id
            self._children.pop(key, None)
            self._proxies.pop(key, None)

    def _launch(self, child: ChildHandle, warm: tuple[bytes, ...] | None = None) -> None:
        if self.start_method == "fork":
            with _fork_lock:
                self._start_process(child, warm)
            return
        if self.start_method == "forkserver":
            _forkserver.start()
        # Sent only the descriptors meant for it, each child can start beside another.
        self._start_process(child, warm)

    def _start_process(self, child: ChildHandle, warm: tuple[bytes, ...] | None) -> None:
        child.dispatch = _child.Dispatch.create(self._context)
        child.unsent.clear()
        child.sent.clear()
        child.unread.clear()
        child.sent_bytes = child.numbered = 0
        child.too_big = None
        child.over_memory = False
        ours, theirs = self._context.Pipe()
        try:
            args = (
                theirs,
                self._initializer,
                self.max_memory is not None,
                self.start_method,
                child.dispatch,
                warm,
            )
            process = self._context.Process(target=_child.main, args=args, name="workpool-worker")
            process.start()
        except BaseException:
            ours.close()  # never started: nothing to stop or reap
            raise
        finally:
            theirs.close()
        # The pool alone reaps its workers. multiprocessing polls every child on its list at
        # each start() and active_children(), from whatever thread, and two polls at once of a
        # forkserver child that just died misread its exit code as 255.
        multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        child.process, child.conn = process, ours
        child.replies = _child.Frames(ours)

    def _serve(self, slot: WorkerSlot, child: ChildHandle) -> None:
        host = self.host
        task = host.take(slot)
        while task is not RETIRE:
            if task is not None:
                task = self._run(slot, child, task)
                if task is not None or self._spare is not None or not self._spare_wanted:
                    continue
                # Idle now: the next spare starts, unless work comes first. Not at once:
                # starting one holds the GIL for a millisecond or so, while whoever waits for
                # the task just done needs it to take the result.
                if not child.parker.wait(_SPARE_PATIENCE):
                    self._keep_spare()
                    continue
                task = host.take(slot)
            else:
                task = child.parker.park(host, slot)
            if task is not None and task is not RETIRE and not child.alive():
                # It died while idle (the OOM killer, a stray kill): no task of ours was
                # running, so none fails; a fresh child takes the task instead.
                child.stop(0.0)
                if not self._boot(slot, child):
                    return

    def _run(self, slot: WorkerSlot, child: ChildHandle, task: Task[Any]) -> Next:
        """Run ``task`` in the child; return the worker's next task, None or RETIRE."""
        host = self.host
        assert child.conn is not None
        with child.lock:  # it is the first of those reserved for the child, if any are
            sent = bool(child.sent) and child.sent[0][0] is task
            if sent:
                child.sent_bytes -= child.sent.popleft()[2]
                child.current = task
                # An interrupt that came before ``current`` was set did nothing: act on it here.
                given_up = task._cancel_requested or task._expired
            elif child.unsent and child.unsent[0] is task:
                child.unsent.popleft()
        payload = None
        if not sent:
            try:
                pickled = task_message(task)
            except Exception as exc:
                return host.done(slot, task, None, exc)  # this task only: the worker is fine
            child.numbered += 1
            payload = _child.NUMBER.pack(child.numbered) + pickled
            del pickled
            with child.lock:
                child.current = task
                given_up = task._cancel_requested or task._expired  # as above
        if given_up and not sent:
            with child.lock:
                child.current = None
            return host.done(slot, task, None, CancelledError())
        if given_up:  # it was sent ahead and may be running already: stop the child
            self.interrupt(slot, task, "timeout" if task._expired else "cancel")
        if self._spare is None and task.options.timeout is not None:
            # It may be killed at its deadline. (After task_message, which named its function
            # for the spare to import: see _stand_by.)
            self._want_spare()
        try:  # noqa: SIM105  # contextlib.suppress costs two Python calls a task
            child.send(payload, self._ahead(slot, child))
        except OSError:
            pass  # it died: the replies it sent come first, then EOF
        del payload
        try:
            reply = self._receive(child)
        except (EOFError, OSError):
            self._lost(slot, child, task)
            return RETIRE
        with child.lock:
            child.current = None
            if child.stopping is not None:
                # It answered, but it is being killed: replace it, and the pool takes back
                # the tasks sent ahead (see PoolCore.done).
                slot.recycle = True
        value, error = self._decode(slot, child, task, reply)
        return host.done(slot, task, value, error)

    def _ahead(self, slot: WorkerSlot, child: ChildHandle) -> list[bytes]:
        """While the child runs its task, the messages of the next ones, as the pool reserves
        them (in bursts: see ``Scheduler.reserve``), as many as the pipe holds unread."""
        if child.stopping is not None or child.over_memory:
            return []  # it is leaving: the next tasks wait for another worker
        unsent, sent = child.unsent, child.sent
        if len(sent) + len(unsent) <= AHEAD_MAX // 2:  # else the pool would add none: no lock
            self.host.reserve(slot, unsent)
        if not unsent:
            return []  # nothing to send: three tasks in four
        seen = child.dispatch.seen.value  # type: ignore[union-attr]  # set once it started
        unread = child.unread
        if unread:
            with child.lock:  # a recall in another thread may add to it
                if unread and max(unread)[0] <= seen:  # the child read (and skipped) them
                    child.sent_bytes -= sum(size for _, size in unread)
                    unread.clear()
        # Pickle them without the lock (a recall may take them back meanwhile), then move
        # them from unsent to sent under it, in one go.
        room = AHEAD_MAX_BYTES - child.sent_bytes
        slots = _child.SKIP_SLOTS - (child.numbered - seen)  # else the child is far behind
        pickled: list[tuple[Task[Any], bytes, int]] = []
        for task in tuple(unsent):  # a copy: a recall may change it
            if (
                len(pickled) >= slots
                or task._cancel_requested  # it starts as usual, and ends cancelled at once
                or task is child.too_big
                or is_traced(task)  # it must carry its attempt's span, which starts with it
            ):
                break
            try:
                message = task_message(task, ahead=True)
            except Exception:
                break  # it fails as usual once it starts
            size = len(message) + _NUMBER_SIZE
            if size > room:  # else the write could block
                if size > AHEAD_MAX_BYTES:
                    child.too_big = task
                break  # sent later, when there is room, or once it starts
            room -= size
            pickled.append((task, message, size))
        messages = []
        if pickled:
            pack = _child.NUMBER.pack
            with child.lock:
                for task, message, size in pickled:
                    if not unsent or unsent[0] is not task:
                        break  # recalled meanwhile, with all after it
                    unsent.popleft()
                    number = child.numbered = child.numbered + 1
                    sent.append((task, number, size))
                    child.sent_bytes += size
                    messages.append(pack(number) + message)
        return messages

    def _receive(self, child: ChildHandle) -> _child.Message:
        """Wait for the reply, escalating to SIGKILL once SIGTERM's grace has passed."""
        replies, process = child.replies, child.process
        assert replies is not None
        assert process is not None
        reply = replies.next(_TICK)
        while reply is None:
            kill_at = child.kill_at
            if kill_at is not None and time.monotonic() >= kill_at:
                child.signal(kill=True)
            elif not process.is_alive():
                raise EOFError  # a descendant still holds its pipe, but the child is dead
            reply = replies.next(_TICK)
        return reply

    def _decode(
        self, slot: WorkerSlot, child: ChildHandle, task: Task[Any], reply: _child.Message
    ) -> tuple[Any, BaseException | None]:
        try:
            ok, value, tb, rss = pickle.loads(reply)
        except Exception as exc:
            error = pickle.UnpicklingError(
                f"cannot unpickle the outcome of task {task.id}: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            return None, error
        if self.max_memory is not None and rss > self.max_memory:
            child.over_memory = True  # nothing more is sent ahead
        if child.over_memory and not child.sent:  # else the tasks sent ahead run first
            slot.recycle = True  # retire after this task; a fresh worker replaces it
        if ok:
            return value, None
        value.__cause__ = RemoteTraceback(tb)
        return None, value

    def _lost(self, slot: WorkerSlot, child: ChildHandle, task: Task[Any]) -> None:
        """The child died under ``task``: say why, so the task ends in the right state."""
        exitcode = child.reap()
        with child.lock:
            child.current = None
            why = child.stopping
        error: BaseException | None
        if why == "cancel" and slot.state is not SlotState.LOST:
            error = CancelledError(f"task {task.id} was cancelled")
        elif why == "timeout":
            error = None  # the pool already failed it with TaskTimeout
        else:
            error = WorkerCrashed(task.id, pid=child.pid, exitcode=exitcode)
        self.host.lost(slot, error)
        if why is None:  # a crash: its tasks crash workers, have the next replacement ready
            self._want_spare()
        # Else the pool stopped it (a timeout, a cancel): a spare is wanted already (see
        # interrupt), and the next starts once a worker is idle, not beside the task that the
        # worker replacing this one is starting.


@atexit.register
def _kill_leftovers() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first. Pools still open drain
    # first (as the stdlib executors do), then any child left (a hung task) is killed and
    # reaped: multiprocessing's hook does not know of them (see _start_process).
    from .. import _pool

    _pool._drain_at_exit()
    for backend in list(_live_backends):
        backend.kill_all()
        backend.join(5.0)

"""Decode workers: processes that read and prepare images batch by batch for the pipeline.

A worker that dies (killed by the kernel for memory, a crash inside a decoder library) costs
the image it was working on, reported as failed with the signal that ended the worker, and
the run goes on in a fresh worker. Each worker writes the position of the item it is about to
read or prepare into shared memory before touching it, so after a death the parent knows the
culprit exactly: it redoes the rest of the lost work and skips the culprit. (torch's
DataLoader, used before, ended the whole iteration on a worker death and could not say which
image caused it.)

Batches come out in a fixed order whatever the timing: random-access sources in index order,
streamed sources round robin over the workers (as torch's DataLoader orders them), so a DNA's
floating-point sums do not depend on scheduling.

No torch here: workers prepare numpy arrays (or encoded JPEGs) and send them through pipes.
"""
from __future__ import annotations

import heapq
import multiprocessing
import os
import signal
import sys
from collections import deque
from multiprocessing.connection import wait
from typing import Callable, Iterator, Sequence

from vdnacli.errors import SourceError

# Test hook, read only inside a decode worker: "SIG:suffix,SIG:suffix" (e.g. "KILL:bomb.png").
# A worker about to prepare an item whose name ends with suffix sends itself that signal: a real
# process death, as the kernel's OOM killer or a segfault would cause.
TEST_DEATH_ENV = "VDNA_TEST_DECODE_DEATH"
PREFETCH = 4  # batches per worker in flight (torch DataLoader's prefetch_factor)
GIVE_UP_AFTER = 3  # deaths in a row that no image can be blamed for
_NAME_BYTES = 512
_IDLE, _READING, _PREPARING = 0, 1, 2


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        why = {"SIGKILL": " (out of memory?)", "SIGSEGV": " (a crash in a decoder library)",
               "SIGBUS": " (a crash in a decoder library)", "SIGABRT": " (a crash in a decoder library)"}.get(sig, "")
        return f"the decode worker died on this image: killed by {sig}{why}"
    return f"the decode worker died on this image (exit status {exitcode})"


class _Slot:
    """One worker's shared record: its task id, state, item position and item name."""

    def __init__(self, ints, names, w: int):
        self.ints, self.names, self.w = ints, names, w

    def start(self, task: int, pos: int, state: int, name: str = "") -> None:
        base = 3 * self.w
        self.ints[base], self.ints[base + 1], self.ints[base + 2] = task, pos, state
        if name:
            raw = name.encode("utf-8", "surrogateescape")[:_NAME_BYTES - 1] + b"\0"
            self.names[self.w * _NAME_BYTES:self.w * _NAME_BYTES + len(raw)] = raw

    def idle(self) -> None:
        self.ints[3 * self.w + 2] = _IDLE

    def read(self) -> tuple[int, int, int, str]:
        base = 3 * self.w
        raw = bytes(self.names[self.w * _NAME_BYTES:(self.w + 1) * _NAME_BYTES]).split(b"\0", 1)[0]
        return self.ints[base], self.ints[base + 1], self.ints[base + 2], raw.decode("utf-8", "surrogateescape")

    def reset(self) -> None:
        self.start(-1, -1, _IDLE, "")
        self.names[self.w * _NAME_BYTES] = b"\0"


def _test_deaths() -> list[tuple[int, str]]:
    out = []
    for part in os.environ.get(TEST_DEATH_ENV, "").split(","):
        sig, _, suffix = part.partition(":")
        if suffix:
            out.append((getattr(signal, "SIG" + sig.strip().upper().removeprefix("SIG")), suffix))
    return out


class _Worker:
    """What runs inside a worker process: a job, a slot, the hook."""

    def __init__(self, slot: _Slot):
        self.slot = slot
        self.deaths = _test_deaths()

    def starting(self, task: int, pos: int, state: int, name: str) -> None:
        self.slot.start(task, pos, state, name)
        for sig, suffix in self.deaths:
            if state == _PREPARING and name.endswith(suffix):
                os.kill(os.getpid(), sig)


def _worker_main(job, w: int, workers: int, conn, ints, names, start, others=()) -> None:
    for c in others:
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends its workers
    if "torch" in sys.modules:  # a forked worker of a process that loaded torch: one thread (as DataLoader)
        sys.modules["torch"].set_num_threads(1)
    from vdnacli.sources import close_handles

    worker = _Worker(_Slot(ints, names, w))
    try:
        job.work(worker, w, workers, conn, start)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone (killed): nothing to report to
    except BaseException as e:  # a bug, not an image: the parent raises it
        try:
            conn.send(("error", e))
        except (OSError, EOFError):
            pass
        except Exception:
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        close_handles()
        conn.close()


class RefsJob:
    """Prepare batches of a random-access source: task = (task id, indices, serial)."""

    def __init__(self, read: Callable, prepare: Callable, refs: Sequence, fetch_threads: int = 1):
        self.read, self.prepare, self.refs, self.fetch_threads = read, prepare, refs, fetch_threads

    def work(self, worker: _Worker, w: int, workers: int, conn, start) -> None:
        while True:
            task = conn.recv()
            if task is None:
                return
            tid, indices, serial = task
            refs = [self.refs[i] for i in indices]
            threads = min(self.fetch_threads, len(refs))
            if not serial and threads > 1 and any(r.remote for r in refs):
                from concurrent.futures import ThreadPoolExecutor

                worker.starting(tid, -1, _READING, "")
                with ThreadPoolExecutor(threads) as pool:
                    items = list(pool.map(self.read, refs))
            else:
                items = None
            out = []
            for k, ref in enumerate(refs):
                if items is None:
                    worker.starting(tid, k, _READING, ref.name)
                    item = self.read(ref)
                else:
                    item = items[k]
                worker.starting(tid, k, _PREPARING, ref.name)
                out.append(self.prepare(item))
            worker.slot.idle()
            conn.send(("batch", tid, out))


class StreamJob:
    """Prepare the items of worker w's share of a streamed source, `batch_size` at a time;
    start = (skip, drop): positions below skip were delivered already, those in drop killed a
    worker."""

    def __init__(self, source, prepare: Callable, batch_size: int):
        self.source, self.prepare, self.batch_size = source, prepare, batch_size

    def work(self, worker: _Worker, w: int, workers: int, conn, start) -> None:
        skip, drop = start
        batch, pos = [], 0
        worker.starting(0, skip - 1, _READING, "")
        for item in self.source.iter_items(w, workers):
            pos += 1
            if pos - 1 < skip or pos - 1 in drop:
                continue
            worker.starting(0, pos - 1, _PREPARING, item.name)
            batch.append(self.prepare(item))
            worker.starting(0, pos - 1, _READING, item.name)
            if len(batch) == self.batch_size:
                conn.send(("batch", pos, batch))
                batch = []
        if batch:
            conn.send(("batch", pos, batch))
        conn.send(("end", pos))


class _Pool:
    """The worker processes, each with its own duplex pipe; restarts a worker that died."""

    def __init__(self, job, workers: int, start_of: Callable[[int], object]):
        ctx = multiprocessing.get_context()
        self.ctx, self.job, self.n = ctx, job, workers
        self.ints = ctx.RawArray("q", 3 * workers)
        self.names = ctx.RawArray("c", _NAME_BYTES * workers)
        self.procs: list = [None] * workers
        self.conns: list = [None] * workers
        self.ended = [False] * workers
        self.unblamed = 0
        for w in range(workers):
            self.start(w, start_of(w))

    def slot(self, w: int) -> _Slot:
        return _Slot(self.ints, self.names, w)

    def start(self, w: int, start) -> None:
        self.slot(w).reset()
        mine, theirs = self.ctx.Pipe(duplex=True)
        # a forked worker inherits this process's ends of its siblings' pipes: it closes them first, or a
        # sibling would never see EOF (nor a broken pipe) when this process dies, and wait forever
        others = [c for c in self.conns if c is not None] + [mine] if self.ctx.get_start_method() == "fork" else []
        p = self.ctx.Process(target=_worker_main, args=(self.job, w, self.n, theirs, self.ints, self.names, start,
                                                        others),
                             daemon=True, name=f"vdna-decode-{w}")
        p.start()
        theirs.close()
        self.procs[w], self.conns[w] = p, mine

    def wait(self, readable: list[int]) -> tuple[list[tuple[int, object]], list[int]]:
        """([(worker, message)], workers that exited) among the live ones; a pipe closed by a
        death counts as that worker having exited."""
        live = [w for w in range(self.n) if self.procs[w] is not None]
        conns = {self.conns[w]: w for w in readable if self.procs[w] is not None}
        sentinels = {self.procs[w].sentinel: w for w in live}
        ready = wait(list(conns) + list(sentinels))
        messages, dead = [], {sentinels[r] for r in ready if r in sentinels}
        for w in sorted({conns[r] for r in ready if r in conns}):
            try:
                messages.append((w, self.conns[w].recv()))
            except (EOFError, OSError):
                dead.add(w)
        return messages, sorted(dead)

    def drain(self, w: int) -> list:
        """Every complete message a dead worker left in its pipe."""
        out, conn = [], self.conns[w]
        try:
            while conn.poll():
                out.append(conn.recv())
        except (EOFError, OSError):
            pass  # a message cut short by the death: its work is redone
        return out

    def bury(self, w: int) -> str:
        p = self.procs[w]
        p.join(5)
        reason = _death_reason(p.exitcode)
        self.conns[w].close()
        self.procs[w] = self.conns[w] = None
        return reason

    def unblamed_death(self, reason: str) -> None:
        self.unblamed += 1
        if self.unblamed >= GIVE_UP_AFTER:
            raise SourceError(f"decode workers keep dying before any image can be blamed ({reason.split(': ', 1)[-1]}); "
                              "try --workers 0")

    def close(self) -> None:
        for w in range(self.n):
            p, conn = self.procs[w], self.conns[w]
            if p is None:
                continue
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for w in range(self.n):
            p = self.procs[w]
            if p is None:
                continue
            p.join(2)
            if p.is_alive():
                p.terminate()
                p.join(2)
            self.conns[w].close()
            self.procs[w] = self.conns[w] = None


def _raise(message) -> None:
    if message[0] == "error":
        raise message[1]


def refs_batches(job: RefsJob, n_items: int, batch_size: int, workers: int, failed: Callable[[int, str], object],
                 prefetch: int = PREFETCH) -> Iterator[list]:
    """Lists of prepared items, batch after batch in index order. `failed(index, reason)`
    makes the item of an image whose worker died."""
    tasks = [list(range(a, min(a + batch_size, n_items))) for a in range(0, n_items, batch_size)]
    todo = {t: list(ix) for t, ix in enumerate(tasks)}
    dead_items: dict[int, object] = {}
    queue: list[tuple[int, bool]] = []  # (task id, serial) redone after a death, first
    next_new, next_out = 0, 0
    results: dict[int, list] = {}
    assigned: list[deque] = [deque() for _ in range(workers)]
    serial: set[int] = set()
    pool = _Pool(job, workers, lambda w: None)

    def finish(tid: int, got: list) -> None:
        by_index = dict(zip(todo[tid], got))
        results[tid] = [dead_items[i] if i in dead_items else by_index[i] for i in tasks[tid]]

    def handle(w: int, message) -> None:
        _raise(message)
        _, tid, got = message
        assigned[w].remove(tid)
        pool.unblamed = 0
        finish(tid, got)

    try:
        while next_out < len(tasks):
            if next_out in results:
                yield results.pop(next_out)
                next_out += 1
                continue
            for w in range(workers):  # hand out work: redone tasks first, at most prefetch per worker
                while pool.procs[w] is not None and len(assigned[w]) < prefetch:
                    if queue:
                        tid, _ = heapq.heappop(queue)
                    elif next_new < len(tasks) and next_new < next_out + workers * prefetch:
                        tid, next_new = next_new, next_new + 1
                    else:
                        break
                    assigned[w].append(tid)
                    pool.conns[w].send((tid, todo[tid], tid in serial))
            messages, dead = pool.wait(list(range(workers)))
            for w, message in messages:
                handle(w, message)
            for w in dead:
                for message in pool.drain(w):
                    handle(w, message)
                tid, pos, state, _ = pool.slot(w).read()
                reason = pool.bury(w)
                blamed = False
                for t in assigned[w]:
                    if t == tid and state != _IDLE and pos < 0:  # died in a threaded fetch: redo it one by one
                        serial.add(t)
                    elif t == tid and state != _IDLE:
                        culprit = todo[t].pop(pos)
                        dead_items[culprit] = failed(culprit, reason)
                        blamed = True
                    if todo[t]:
                        heapq.heappush(queue, (t, False))
                    else:
                        finish(t, [])
                assigned[w].clear()
                if blamed:
                    pool.unblamed = 0
                else:
                    pool.unblamed_death(reason)
                pool.start(w, None)
    finally:
        pool.close()


def stream_batches(job: StreamJob, workers: int, failed: Callable[[str, str], object],
                   prefetch: int = PREFETCH) -> Iterator[list]:
    """Lists of prepared items of a streamed source: worker 0's first batch, worker 1's first,
    ..., round robin; `failed(name, reason)` makes the item of an image whose worker died."""
    delivered = [0] * workers
    drop: list[set] = [set() for _ in range(workers)]
    queues: list[deque] = [deque() for _ in range(workers)]
    ended = [False] * workers
    pool = _Pool(job, workers, lambda w: (0, frozenset()))

    def handle(w: int, message) -> None:
        _raise(message)
        if message[0] == "end":
            ended[w] = True
            return
        _, pos, items = message
        delivered[w] = pos
        queues[w].append(items)
        pool.unblamed = 0

    try:
        turn = 0
        while not all(ended[w] and not queues[w] for w in range(workers)):
            w = turn % workers
            if ended[w] and not queues[w]:
                turn += 1
                continue
            if queues[w]:
                yield queues[w].popleft()
                turn += 1
                continue
            messages, dead = pool.wait([v for v in range(workers) if len(queues[v]) < prefetch and not ended[v]])
            for v, message in messages:
                handle(v, message)
            for v in dead:
                for message in pool.drain(v):
                    handle(v, message)
                _, pos, state, name = pool.slot(v).read()
                reason = pool.bury(v)
                if ended[v]:
                    continue  # finished normally
                if state == _PREPARING:
                    drop[v].add(pos)
                    queues[v].append([failed(name, reason)])
                    pool.unblamed = 0
                else:
                    pool.unblamed_death(reason)
                pool.start(v, (delivered[v], frozenset(drop[v])))
    finally:
        pool.close()

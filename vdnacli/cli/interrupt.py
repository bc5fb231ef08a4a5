"""Ctrl-C anywhere: one line on stderr saying what was kept, decode workers torn down, exit 130
within about 2 s.

The first SIGINT raises KeyboardInterrupt in the main thread as usual, so `finally` blocks and
context managers clean up. Python runs that handler only between bytecodes: a main thread
inside a long C call (a forward pass, a join) would not see it for seconds. So the signal also
wakes a watcher thread (through `signal.set_wakeup_fd`, written by the C-level handler), which
gives the main thread GRACE_S to finish, then terminates the worker processes and leaves with
`os._exit(130)`. A second Ctrl-C leaves at once. Entries are written atomically (a temporary
file, then a rename), so leaving early never leaves half an entry: at most a temporary file
that `vdna verify --repair` removes.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import NoReturn

GRACE_S = 1.5
_state = {"interrupted": False, "handled": 0, "installed": False, "said": False}
_say_lock = threading.Lock()


def interrupted() -> bool:
    """Whether this process got SIGINT (whatever exception or exit code that became on its way up)."""
    return _state["interrupted"]


def installed() -> bool:
    return _state["installed"]


def install() -> None:
    """Take over SIGINT for this process (the CLI's main thread only; a no-op elsewhere)."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    try:
        r, w = socket.socketpair()
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGINT, _on_sigint)
    except (ValueError, OSError):  # not the main thread of the main interpreter, or no sockets
        return
    _state.update(installed=True, sockets=(r, w))
    threading.Thread(target=_watch, args=(r,), name="vdna-sigint", daemon=True).start()


def _on_sigint(signum, frame):
    _state["interrupted"] = True
    _state["handled"] += 1
    if _state["handled"] > 1:  # a second Ctrl-C: no more waiting
        leave()
    raise KeyboardInterrupt


def _watch(r: socket.socket) -> None:
    while True:
        try:
            data = r.recv(64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data:
            break
    _state["interrupted"] = True
    time.sleep(GRACE_S)
    leave()  # still running: the main thread is stuck in C code or a slow teardown


def message() -> str:
    """ "interrupted — nothing was written", or the entries this process committed before."""
    store = sys.modules.get("registry.store")  # not loaded: nothing can have been written
    COMMITTED = getattr(store, "COMMITTED", [])
    if not COMMITTED:
        return "interrupted — nothing was written"
    names = list(dict.fromkeys(n for _, n in COMMITTED))
    shown = ", ".join(f"'{n}'" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"interrupted — kept what was written before: {shown}; nothing else was written"


def stop_workers() -> None:
    """Terminate the worker processes this process started (decode workers), without waiting long."""
    try:
        import multiprocessing

        children = multiprocessing.active_children()
    except Exception:  # noqa: BLE001 - leaving anyway
        return
    for p in children:
        try:
            p.terminate()
        except Exception:  # noqa: BLE001
            pass
    deadline = time.monotonic() + 0.3
    for p in children:
        try:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
        except Exception:  # noqa: BLE001
            pass


def say(json_mode: bool) -> None:
    """The interrupt's line on stderr (and its JSON object on stdout with --json), once."""
    with _say_lock:
        if _state["said"]:
            return
        _state["said"] = True
    text = message()
    try:
        if json_mode:
            import json

            sys.stdout.write(json.dumps({"error": text, "code": 130, "kind": "interrupted"}) + "\n")
            sys.stdout.flush()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def leave() -> NoReturn:
    """Stop the workers, say so, exit 130 now (from any thread)."""
    stop_workers()
    say(_state.get("json", False))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def set_json(json_mode: bool) -> None:
    _state["json"] = json_mode

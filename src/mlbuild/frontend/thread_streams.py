"""sys.stdout and sys.stderr for doit's thread runner: set once, each writing where the current thread's action wants.

doit's PythonAction captures an action's output by assigning sys.stdout and sys.stderr around the
action (doit/action.py), and Stream._get_out_err reads them (doit/task.py). Those are one pair for
the whole process: under the thread runner two actions swap them under each other, so one task's
output lands in another task's capture, and worse, CPython's print() holds sys.stdout as a borrowed
reference while it writes (python/cpython#130163, fixed only in newer releases than Debian 12's
3.11): a swap by another thread frees the stream under it, and the run dies of a segmentation fault
(seen about once per few hundred runs, in frames such as doit's Writer.flush or the garbage collector).

Here sys.stdout and sys.stderr become routers that are never replaced for the rest of the process;
the `sys` that doit's action and task modules see is a view whose stdout and stderr are the current
thread's own: doit's assignments set the thread's target, its reads get it.
"""

import sys
import threading

STREAMS = ("stdout", "stderr")


class _Route:
    """A process-wide stream writing to the current thread's target, else to the stream it replaced."""

    def __init__(self, original):
        self._original = original
        self._local = threading.local()

    def current(self):
        return getattr(self._local, "stream", None) or self._original

    def set_current(self, stream) -> None:
        self._local.stream = None if stream is self or stream is self._original else stream

    def write(self, text):
        return self.current().write(text)

    def flush(self) -> None:
        self.current().flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, buffer...: the target's
        return getattr(self.current(), name)


class _SysForDoit:
    """What doit's modules see as `sys`: the real module, but stdout and stderr per thread."""

    def __init__(self, routes: dict[str, _Route]):
        object.__setattr__(self, "_routes", routes)

    def __getattr__(self, name):
        route = self._routes.get(name)
        return route.current() if route is not None else getattr(sys, name)

    def __setattr__(self, name, value):
        route = self._routes.get(name)
        if route is not None:
            route.set_current(value)
        else:
            setattr(sys, name, value)


def install() -> None:
    """Route sys.stdout/sys.stderr per thread for doit's action and task modules (idempotent; main thread, before a run)."""
    import doit.action
    import doit.task

    if isinstance(doit.action.sys, _SysForDoit) or sys.stdout is None or sys.stderr is None:
        return
    routes = {name: _Route(getattr(sys, name)) for name in STREAMS}
    for name, route in routes.items():
        setattr(sys, name, route)
    view = _SysForDoit(routes)
    doit.action.sys = view
    doit.task.sys = view

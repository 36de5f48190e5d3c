"""doit's thread runner and its actions' output: each action's capture holds its own lines, sys.stdout never changes.

doit's PythonAction assigns sys.stdout/sys.stderr around an action; under the thread runner two actions
swap them under each other (one task's output in another's capture) and CPython's print() can use a
stream another thread just freed (python/cpython#130163: the segmentation faults seen in threaded runs).
mlbuild routes them per thread (src/mlbuild/frontend/thread_streams.py). The real doit PythonAction runs here,
in two threads made to interleave at the worst moment with a barrier.
"""

import subprocess
import sys
import textwrap

from conftest import SRC


def test_two_actions_in_two_threads_each_capture_only_their_own_output_and_sys_stdout_stays_put():
    program = textwrap.dedent("""
        import sys, threading
        from doit.action import PythonAction
        from mlbuild.frontend import thread_streams

        if sys.argv[1] == "routed":
            thread_streams.install()
        stdout_before = sys.stdout
        both_inside = threading.Barrier(2)
        first_printed = threading.Event()

        def first():
            both_inside.wait()          # the second action has swapped sys.stdout by now (unrouted)
            print("from the first")
            first_printed.set()

        def second():
            both_inside.wait()
            first_printed.wait()
            print("from the second")

        actions = {}
        def run(name, function):
            action = PythonAction(function)
            action.execute()
            actions[name] = action

        threads = [threading.Thread(target=run, args=(name, function)) for name, function in (("first", first), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(repr(actions["first"].out), repr(actions["second"].out), sys.stdout is stdout_before, file=sys.__stdout__)
    """)
    outcomes = {}
    for mode in ("routed", "plain"):
        result = subprocess.run([sys.executable, "-c", program, mode], capture_output=True, text=True, timeout=60,
                                env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        outcomes[mode] = result.stdout.strip()
    assert outcomes["routed"] == "'from the first\\n' 'from the second\\n' True"
    # What doit does without the routing, the same way every time: the first action's line goes to the
    # second's capture (so this test can tell the two apart).
    assert outcomes["plain"] != outcomes["routed"]

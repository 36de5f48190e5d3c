"""console.say: a line from any thread comes out whole (doit runs tasks in threads)."""

import re
import threading
import time

from mlbuild.console import say


class HandingOn:
    """A stream written in Python that hands each write on, as doit's Writer does: another thread may run in between."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        time.sleep(0)  # lets the other thread in, as a real stream's write may
        self.parts.append(text)

    def flush(self):
        pass


def _broken_lines(write) -> int:
    stream = HandingOn()
    threads = [threading.Thread(target=lambda name=name: [write(f"mlbuild: fetch:{name}: got {i}", stream) for i in range(300)])
               for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = "".join(stream.parts).splitlines()
    assert len([line for line in lines if line]) >= 300
    return sum(1 for line in lines if not re.fullmatch(r"mlbuild: fetch:[ab]: got \d+", line))


def test_two_threads_lines_never_run_together():
    assert _broken_lines(say) == 0


def test_the_stream_above_does_show_print_running_two_threads_lines_together():
    """What the test above would catch: print() writes the text and the newline in two calls."""
    assert _broken_lines(lambda line, stream: print(line, file=stream, flush=True)) > 0

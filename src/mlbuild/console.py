"""One line to the console from any thread, whole.

print(text) writes the text and the newline in two calls: under doit's threads two tasks' lines
then run together ("…(13.4 KiB/s)mlbuild: fetch:app: got …" and an empty line). A line written
with its newline in one call comes out whole.
"""

import sys


def say(line: str, stream=None) -> None:
    """line and its newline in one write to stream (sys.stdout, as it is at the call), flushed."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()

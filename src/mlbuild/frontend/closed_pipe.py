"""A reader that went away (`doit list | head -1`): the command ends quietly, as cat or grep do.

Python ignores SIGPIPE, so writing to a pipe nobody reads raises BrokenPipeError: left alone it
ends in a traceback, or in "Exception ignored ... BrokenPipeError" when the interpreter flushes
stdout at exit. The entry points (the mlbuild command, the doit command, mlbuild's doit commands)
flush stdout themselves and, when that is what failed, point stdout at /dev/null (so the last
flush has somewhere to go) and end with 141, the status of a program SIGPIPE ended
(https://docs.python.org/3/library/signal.html#note-on-sigpipe). A BrokenPipeError of another
pipe (a child process that died) is not this: stdout is checked before the error is swallowed.
"""

import functools
import os
import select
import signal
import sys

CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE


def stdout_closed() -> bool:
    """stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something that is no file (a test's capture)
        return False
    poller = select.poll()
    poller.register(descriptor, 0)  # errors are always reported
    return any(events & select.POLLERR for _, events in poller.poll(0))


def discard_stdout() -> int:
    """Whatever stdout still holds goes to /dev/null from now on; the status to exit with."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return CLOSED_PIPE_STATUS


def flushed(status):
    """status, once stdout is flushed; CLOSED_PIPE_STATUS when its reader has gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_closed():
            raise
        return discard_stdout()
    return status


def quiet_when_the_reader_goes(main):
    """main's status (or its sys.exit), but CLOSED_PIPE_STATUS, with no word, when stdout's reader went away."""
    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            try:
                status = main(*args, **kwargs)
            except SystemExit as exit:  # argparse's --help, doit's own sys.exit: its output is in the buffer still
                exit.code = flushed(exit.code)
                raise
            return flushed(status)
        except BrokenPipeError:
            if not stdout_closed():
                raise
            return discard_stdout()
    return guarded

"""What dodo.py needs: load the project or exit with one line, and doit's configuration."""

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from mlbuild.engine.boundary import EXPECTED, one_line
from mlbuild.errors import MlbuildError
from mlbuild.processes import install_interrupt_handling
from mlbuild.reporting.progress import INTERACTIVE, reporter_for
from mlbuild.frontend import thread_streams
from mlbuild.frontend.project import Project
from mlbuild.trees import remove_tree
from mlbuild.reproducible import BUILD_UMASK

DOIT_DB = "doit.sqlite3"


def _command_line_variables() -> dict[str, str]:
    """Every key=value of doit's command line (config.py rejects the keys it does not know)."""
    from doit import doit_cmd

    return dict(doit_cmd._CMDLINE_VARS or {})


def load_project_or_exit(root: Path) -> Project:
    """The project, or a one-line error on stderr and a non-zero exit (no task runs)."""
    install_interrupt_handling()  # Ctrl-C/SIGTERM: builds stopped, one line, exit 130
    _warn_if_doit_commands_are_plain(root)
    os.umask(BUILD_UMASK)  # the builder's umask must not reach outputs, the target tree or the images
    try:
        project = Project(root, _command_line_variables())
        project.render_all()
        if project.config.offline:  # what the selected tasks need must be cached: said before any task runs
            from mlbuild.engine import offline

            selected = offline.selected_tasks(project, sys.argv[1:])
            if selected is not None:
                offline.check(project, selected)
        _prepare_state(project.build_dir)
    except EXPECTED as error:
        print(f"mlbuild: {one_line(error)}", file=sys.stderr)
        sys.exit(error.exit_status if isinstance(error, MlbuildError) else 1)
    return project


# Commands mlbuild extends through pyproject.toml's [tool.doit.plugins.command] (doit_commands.py).
EXTENDED_COMMANDS = ("list", "info", "forget")


def _warn_if_doit_commands_are_plain(root: Path) -> None:
    """`python -m doit -k forget X` from a subfolder: doit read no pyproject.toml of the checkout, say so.

    Without mlbuild's forget, the stamp stays and X does not run again: a silent no-op otherwise."""
    from doit import loader

    started = Path(getattr(loader, "initial_workdir", None) or os.getcwd())
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-") and "=" not in arg), "run")
    if command in EXTENDED_COMMANDS and "mlbuild.frontend.doit_commands" not in sys.modules and started.resolve() != root.resolve():
        print(f"mlbuild: warning: doit started in {started}, so it did not read {root}/pyproject.toml: "
              f"`doit {command}` is doit's own here, not mlbuild's; run the `doit` mlbuild installs, "
              f"or run it in {root}", file=sys.stderr, flush=True)


def _prepare_state(build_dir: Path) -> None:
    """build/ exists and doit's database can be opened; a damaged one is moved aside (doit's records only save time)."""
    if build_dir.is_symlink() and not build_dir.exists():
        raise MlbuildError(f"{build_dir}: a dangling symbolic link where the build folder should be")
    if build_dir.exists() and not build_dir.is_dir():
        raise MlbuildError(f"{build_dir}: expected the build folder, found a file; move it away and run again")
    build_dir.mkdir(parents=True, exist_ok=True)
    database = build_dir / DOIT_DB
    problem = _database_problem(database)
    if problem:
        aside = database.with_name(f"{DOIT_DB}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(database, aside)
        for suffix in ("-journal", "-wal", "-shm"):
            remove_tree(database.with_name(DOIT_DB + suffix))
        print(f"mlbuild: warning: {database}: doit's database is damaged ({problem}); moved aside to {aside.name}, "
              "a new one is started (stamps, not doit's records, decide what runs)", file=sys.stderr, flush=True)


def _database_problem(database: Path) -> str | None:
    if not database.exists() and not database.is_symlink():
        return None
    if not database.is_file():
        return "not a regular file"
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
            if "doit" in tables:
                for (data,) in connection.execute("select task_data from doit"):
                    if not isinstance(json.loads(data), dict):
                        return "a record is not a JSON object"
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return None  # locked by a run writing it now, or the like: not damage
    except sqlite3.DatabaseError as error:
        return str(error)
    except (ValueError, TypeError):
        return "a record is not JSON"
    return None


def default_tasks(project: Project) -> list[str]:
    """What a plain `doit` builds: every configured arch's target and images."""
    return [f"build:{kind}-{arch}" for arch in project.config.arches for kind in ("target", "images")]


# Tasks in flight beyond the job budget: room for sources that unpack (no job token, steps/fetch.py).
UNPACKING = 2


def default_process(project: Project, argv: list[str]) -> int:
    """doit's -n when the command line gives none: the job budget plus room for two unpacks.

    The run's job pool (jobserver.py), not doit's -n, bounds the compilers: a task waits for a token
    before it starts. A run that selects run: or menuconfig: stays in doit's main thread (0): they own
    the terminal."""
    if any(word.startswith(INTERACTIVE) for word in argv):
        return 0
    return _budget(project) + UNPACKING


def _budget(project: Project) -> int:
    from mlbuild.steps import distcc

    return distcc.jobs(project.config)


def doit_config(project: Project) -> dict:
    process = default_process(project, sys.argv[1:])
    # doit's actions swap sys.stdout/sys.stderr; with its thread runner that crashed CPython (thread_streams.py).
    thread_streams.install()
    return {
        "num_process": process,
        # Correctness never depends on doit's DB (see signature.py); sqlite3
        # lets `doit list`/`doit info` read while a build runs.
        "backend": "sqlite3",
        "dep_file": str(project.build_dir / DOIT_DB),
        "par_type": "thread",
        "default_tasks": default_tasks(project),
        "action_string_formatting": "new",
        # Live progress on a terminal, calm plain lines elsewhere, a summary and build/stats/ (progress.py).
        # The ETA and the replay count the job budget's slots: doit's further ones only wait for a token.
        "reporter": reporter_for(project, _budget(project)),
    }

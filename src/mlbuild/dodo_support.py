"""What dodo.py needs: load the project or exit with one line, and doit's configuration."""

import signal
import sys
from pathlib import Path

from .errors import MlbuildError
from .models import Config
from .project import Project


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def load_project_or_exit(root: Path) -> Project:
    """The project, or a one-line error on stderr and exit status 2 (no task runs)."""
    from doit import get_var

    command_line = {key: get_var(key) for key in Config.model_fields if get_var(key) is not None}
    try:
        project = Project(root, command_line)
        project.render_all()
    except MlbuildError as error:
        print(f"mlbuild: {error}", file=sys.stderr)
        sys.exit(error.exit_status)
    # doit keeps its records on Ctrl-C but loses them on SIGTERM: make both the same.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return project


def doit_config(project: Project) -> dict:
    project.build_dir.mkdir(parents=True, exist_ok=True)
    return {
        # Correctness never depends on doit's DB (see incremental.py); sqlite3
        # lets `doit list`/`doit info` read while a build runs.
        "backend": "sqlite3",
        "dep_file": str(project.build_dir / "doit.sqlite3"),
        "par_type": "thread",
        "default_tasks": [f"build:{kind}-{arch}" for arch in project.config.arches for kind in ("target", "images")],
        "action_string_formatting": "new",
    }

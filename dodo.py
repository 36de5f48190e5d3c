"""mlbuild's tasks for doit: `doit list`, `doit build:target-arm64`, `doit run:arm64`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # usable from a checkout without `pip install`

from mlbuild.dodo_support import doit_config, load_project_or_exit  # noqa: E402
from mlbuild.tasks import group_tasks  # noqa: E402

project = load_project_or_exit(ROOT)
DOIT_CONFIG = doit_config(project)


def task_fetch():
    yield from group_tasks(project, "fetch")


def task_build():
    yield from group_tasks(project, "build")

"""mlbuild's tasks for doit: `doit list`, `doit build:target-arm64`, `doit run:arm64`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # usable from a checkout without `pip install`

from mlbuild.frontend.dodo_support import doit_config, load_project_or_exit  # noqa: E402
from mlbuild.frontend.tasks import boot_tasks, group_tasks, menuconfig_tasks  # noqa: E402

project = load_project_or_exit(ROOT)
DOIT_CONFIG = doit_config(project)


def task_fetch():
    yield from group_tasks(project, "fetch")


def task_build():
    yield from group_tasks(project, "build")


# doit forbids a creator named task_run (`run` is a doit command) but not tasks
# whose basename is run, so `doit run:arm64` works.
def task_run_in_qemu():
    yield from boot_tasks(project, "run")


def task_boottest():
    yield from boot_tasks(project, "boottest")


def task_menuconfig():
    yield from menuconfig_tasks(project)

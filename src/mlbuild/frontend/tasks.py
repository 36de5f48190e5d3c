"""doit task dictionaries generated from the project's steps."""

import os
import sys
import uuid

from doit.exceptions import TaskFailed

from mlbuild.boot import accel, network
from mlbuild.jobserver import job_slot
from mlbuild.steps import distcc
from mlbuild.system import compression
from mlbuild.engine.boundary import EXPECTED, one_line
from mlbuild.errors import MlbuildError
from mlbuild.model.graph import disk_task, images_task, target_task
from mlbuild.steps.menuconfig import run_menuconfig
from mlbuild.boot.qemu import (ROOT_DEVICE_CHECK, boot_test, check_installed, checks_for, firmware_checks, firmware_command,
                               firmware_files, network_check, persistence_checks, qemu_command, run_interactive, terminal_size)
from mlbuild.steps.disk import FILE_NAME
from mlbuild.engine.execution import execute
from mlbuild.engine.signature import is_up_to_date
from mlbuild.engine.tree_lock import TreeLock
from mlbuild.trees import remove_tree
from mlbuild.reporting.stats import measured


def _uptodate(step):
    def check() -> bool:
        if step.name in step.project.config.rebuild:
            return False  # `mlbuild rebuild`: it runs though its stamp is current
        try:
            return is_up_to_date(step)
        except EXPECTED:
            return False  # the action reports the error properly
    return check


def _reporting(function, *args, task: str | None = None):
    """A doit action: every expected failure becomes doit's TaskFailed with one line naming the task."""
    def run():
        try:
            function(*args)
        except EXPECTED as error:
            return TaskFailed(one_line(error, task))
    return run


def _holding_job(project, function, takes_job: bool = True):
    """function, run holding one token of the run's job pool (jobserver.py): the task's own job.

    Taken before the action's record starts (stats.measured), so waiting for a token is not its time."""
    if not takes_job:
        return function

    def run(*args):
        with job_slot(distcc.jobs(project.config)):
            return function(*args)
    return run


def _clean(step):
    def clean():
        try:
            TreeLock(step.project.build_dir / ".lock").acquire()
            step.project.stamps.forget(step.stamp)
            remove_tree(step.output)
            if step.work:
                remove_tree(step.work)
        except EXPECTED as error:
            # doit captures an action's sys.stderr: the message goes to the real one.
            print(f"mlbuild: {one_line(error, f'clean {step.name}')}", file=sys.__stderr__, flush=True)
            # doit's clean command reports a failed clean action and still exits 0: stop here, non-zero.
            raise SystemExit(2) from None
        print(f"{step.name}: removed {step.project.relative(step.output)}")
    # What `doit clean` (and its dry run, -n) names instead of `function _clean.<locals>.clean`.
    clean.__qualname__ = "mlbuild_clean(output, work folder, stamp)"
    return clean


def step_task(step) -> dict:
    basename, _, subname = step.name.partition(":")
    return {
        "basename": basename,
        "name": subname,
        "doc": step.doc,
        "actions": [_reporting(_holding_job(step.project, measured, step.takes_job), step, execute, step, task=step.name)],
        "uptodate": [_uptodate(step)],
        "task_dep": step.deps,
        "clean": [_clean(step)],
        "verbosity": 2,
    }


def group_tasks(project, basename: str):
    """doit tasks of one group (fetch, build), with a documented group task first."""
    docs = {"fetch": "download and verify sources (unpacked when a build needs them)", "build": "build components, targets and images"}
    yield {"basename": basename, "name": None, "doc": docs[basename]}
    for step in project.ordered_steps():
        if step.name.startswith(basename + ":"):
            task = step_task(step)
            if not project.in_default_build(step.name):
                # A top-level task of that full name: `doit build` leaves it out
                # (hours of LLVM), `doit build:toolchain` still runs it.
                task["basename"] = step.name
                del task["name"]  # `name: None` would make it a group, whose actions doit drops
            yield task


def _target_recipes(project, arch: str) -> list:
    """The recipes whose outputs make up the arch's target, in build order."""
    parts = set(project.graph.predecessors(target_task(arch)))
    return [step.recipe for step in project.ordered_steps() if step.name in parts and getattr(step, "recipe", None)]


def _boot_files(project, arch: str):
    """The kernel (where the recipe that installs it says), the initramfs and the disk image."""
    kernels = [(recipe.name, recipe.kernel_for(arch)) for recipe in _target_recipes(project, arch) if recipe.kernel_for(arch)]
    if len(kernels) != 1:
        which = ", ".join(f"recipes/{name}.toml" for name, _ in kernels) or "none"
        raise MlbuildError(f"{target_task(arch)}: expected one recipe that declares the kernel to boot ([arch.{arch}] kernel = ...), found {which}")
    kernel = project.steps[target_task(arch)].output / kernels[0][1]
    images = project.steps[images_task(arch)].output
    return kernel, images / compression.booted(project.config.initramfs_compression), images / "rootfs.ext4"


def _disk_image(project, arch: str):
    """disk.img of the arch (build:disk-<arch>), for boot=firmware."""
    if disk_task(arch) not in project.steps:
        raise MlbuildError(f"boot=firmware: {arch} has no disk image (arches/{arch}.toml has no [firmware], "
                           "or no recipe of its system declares a kernel)")
    return project.steps[disk_task(arch)].output / FILE_NAME


def _accelerator(project, arch: str, kernel):
    """The accelerator for this arch under the `accel` setting, said in one line."""
    check_installed(project.arches[arch])
    chosen = accel.choose(project.arches[arch], project.arches.machine_arch(), project.config.accel, kernel,
                          project.build_dir / "state" / f"accel-{arch}.json")
    print(f"mlbuild: {chosen.reason}", flush=True)
    return chosen


def _run(project, arch: str) -> None:
    kernel, initramfs, disk = _boot_files(project, arch)
    facts = project.arches[arch]
    options = network.nic_options(facts.qemu.nic, project.config.network)
    if project.config.boot == "firmware":
        flash, disk, variables = firmware_files(facts, _disk_image(project, arch), _boot_folder(project, arch), writable_copy=False)
        chosen = _accelerator(project, arch, kernel)
        command = firmware_command(facts, flash, variables, disk, snapshot=True, interactive=True, accelerator=chosen,
                                   network_options=options)
    else:
        chosen = _accelerator(project, arch, kernel)
        command = qemu_command(facts, kernel, initramfs, disk, interactive=True, accelerator=chosen,
                               console_size=terminal_size(), network_options=options)
    run_interactive(command)


def _boot_folder(project, arch: str):
    """Where a firmware boot keeps its copies (the firmware's variables, the disk the boot test writes): per run."""
    return project.target_build_dir / "boot" / arch


def _boottest(project, arch: str) -> None:
    log_path = project.new_log(f"boottest:{arch}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    kernel, initramfs, disk = _boot_files(project, arch)
    facts = project.arches[arch]
    firmware = project.config.boot == "firmware"
    if firmware:
        flash, disk, variables = firmware_files(facts, _disk_image(project, arch), _boot_folder(project, arch), writable_copy=True)
    chosen = _accelerator(project, arch, kernel)
    checks = checks_for(_target_recipes(project, arch), project.config.checks, arch)
    fetch = project.steps[target_task(arch)].system_facts.get("fetch")
    report = project.build_dir / "reports" / f"boottest-{arch}.xml"
    # Every packet stays in the machine: restrict=on, and one forward to this server on 127.0.0.1.
    with network.FileServer(os.urandom(256 << 10)) as server:
        options = network.nic_options(facts.qemu.nic, "restricted", server.port)
        if fetch:  # the system has a program that fetches a URL (its recipe's system.fetch)
            checks.append(network_check(fetch, server.sha256))
        boots = [(checks, facts.qemu.power_off, report, log_path)]
        if firmware:
            written, read_back = persistence_checks(uuid.uuid4().hex)
            # The first boot ends with `reboot` (QEMU's -no-reboot ends then), the second boots the same disk copy.
            boots = [(firmware_checks(facts, checks) + [written], "reboot", report, log_path),
                     ([ROOT_DEVICE_CHECK, read_back], facts.qemu.power_off,
                      report.with_name(f"boottest-{arch}-second-boot.xml"), project.new_log(f"boottest:{arch}-second-boot"))]
        try:
            for number, (boot_checks, power_off, boot_report, boot_log) in enumerate(boots, 1):
                if firmware:
                    print(f"   boot {number} of {len(boots)}: {facts.firmware.loader} from {project.relative(disk)} through {flash.code}")
                    command = firmware_command(facts, flash, variables, disk, snapshot=False, interactive=False,
                                               accelerator=chosen, network_options=options)
                else:
                    command = qemu_command(facts, kernel, initramfs, disk, interactive=False, accelerator=chosen,
                                           network_options=options)
                for line in boot_test(arch, command, boot_log, project.config.boot_timeout, boot_checks, accel=chosen.name,
                                      report=boot_report, power_off=power_off):
                    print(f"   {line}")
        finally:
            print(f"   results: {project.relative(report)} (JUnit XML)")


def boot_tasks(project, basename: str):
    """run:<arch> (interactive) and boottest:<arch> (headless, checked); they always run."""
    make, doc = {
        "run": (_run, "boot the {arch} system in QEMU on the serial console"),
        "boottest": (_boottest, "boot the {arch} system headless, run checks in it, power off"),
    }[basename]
    yield {"basename": basename, "name": None, "doc": doc.format(arch="chosen")}
    for arch in project.config.arches:
        yield {
            "basename": basename,
            "name": arch,
            "doc": doc.format(arch=arch),
            "actions": [_reporting(_holding_job(project, make), project, arch, task=f"{basename}:{arch}")],
            "task_dep": [images_task(arch)] + ([disk_task(arch)] if project.config.boot == "firmware" and disk_task(arch) in project.steps else []),
            "verbosity": 2,
        }


def menuconfig_tasks(project):
    """menuconfig:<recipe>-<arch> for Kconfig-based recipes: interactive, always run."""
    yield {"basename": "menuconfig", "name": None, "doc": "edit a Kconfig configuration; changes are saved in fragments/"}
    for step in project.ordered_steps():
        if step.name.startswith("build:") and getattr(step, "recipe", None) and step.recipe.menuconfig:
            yield {
                "basename": "menuconfig",
                "name": step.slug,
                "doc": f"edit the {step.recipe.name} configuration for {step.arch}",
                "actions": [_reporting(run_menuconfig, step, task=f"menuconfig:{step.slug}")],
                "task_dep": [dep for dep in step.deps],
                "verbosity": 2,
            }

"""Every kind of step, by the graph's kind of node: the one place that knows them all.

Each kind registers itself with Step when its module is loaded (`class FetchStep(Step, kind="fetch")`);
this module loads them, so a Project makes any node's step without naming a class.
"""

from mlbuild.steps import build, disk, fetch, images, target, toolchain
from mlbuild.steps.base import Step

KINDS = (fetch.FetchStep, build.BuildStep, target.TargetStep, images.ImagesStep, disk.DiskStep, toolchain.ToolchainStep)


def make_step(project, name: str, node: dict) -> Step:
    """The step of a task of the graph: node holds its kind, arch, recipe and toolchain."""
    return Step.kinds[node["kind"]](project, name, node)

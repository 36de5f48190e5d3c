"""`mlbuild check`: every recipe and template validated, every build script and config file rendered.

Its own module: `mlbuild new` runs it on the recipe it writes, and the command line registers it."""

from mlbuild.engine.boundary import EXPECTED, one_line
from mlbuild.errors import InputError
from mlbuild.frontend.project import Project
from mlbuild.render import environment, language_of, raw_expansion_message, raw_expansions
from mlbuild.system import hooks


def cmd_check(project: Project, args) -> int:
    """Validate every recipe and template and render every build script and config file."""
    # templates/target is an overlay: only its .j2 files are templates, the rest is copied as it is.
    # External trees' templates too (external.py), each named where it is.
    templates = [(folder, p) for folder in project.template_dirs for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                 and not (p.relative_to(folder).parts[0] == "target" and p.suffix != ".j2")]
    for folder, path in templates:
        name = path.relative_to(folder).as_posix()
        label = project.relative(path) if folder != project.templates else f"templates/{name}"
        language = "shell" if name.startswith("build/") else language_of(name)
        try:
            text = path.read_text()
            environment(project.template_dirs, language).parse(text, name=name, filename=str(path))
        except Exception as error:
            raise InputError(f"{label}:{getattr(error, 'lineno', '?')}: {getattr(error, 'message', error)}") from None
        if language == "shell":
            for line, where, expression in raw_expansions(text)[:1]:
                raise InputError(f"{label}:{line}: {raw_expansion_message(where, expression)}")
    # Recipes that are off (`when`) are checked too: render with every switch on, then once more
    # for each other choice of each choice option (the templates that read it, and the targets
    # of the arches whose components react to it: a choice may change which components they hold).
    declared = project.declared_options
    switches = {name: "1" for name, found in declared.items() if found.option.is_switch}
    settings = [switches] + [{**switches, name: choice} for name, found in declared.items()
                             for choice in found.option.choices if choice != found.option.default]
    rendered = 0
    for index, values in enumerate(settings):
        varied = values.keys() - switches.keys()  # the choice option this round renders otherwise (none in the first)
        try:
            checked = Project(project.root, values)
            for step in checked.ordered_steps():
                if varied and not varied & step.options.keys():
                    continue  # rendered in the first round already
                rendered += step.check(fresh=True)
        except EXPECTED as error:
            if not varied:
                raise
            # Only this choice reaches the mistake: say which, or the default's render (which passed) looks wrong.
            chosen = ", ".join(f"{name}={values[name]}" for name in sorted(varied))
            raise InputError(f"{one_line(error)} (rendered with {chosen})") from None
        project = project if index else checked  # the rest of the check looks at the first (every switch on)
    for kind in hooks.KEYS:  # each hook exists and is executable
        hooks.scripts(project, kind)
    print(f"ok: {len(project.recipes)} recipes, {len(project.steps)} tasks, {len(templates)} templates, {rendered} files rendered")
    return 0

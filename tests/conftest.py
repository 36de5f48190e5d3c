"""Helpers for mlbuild's engine tests: a synthetic project of tiny C programs built with the real doit.

The project (see make_project) has three recipes:

    hello  own tarball (hello.c, extra.c), prints vars.greeting
    extra  source = "hello", builds extra.c, no dependencies
    app    own tarball (app.c), depends on hello, prints vars.message

Builds use the host LLVM through ccache; sources are file:// tarballs with their real sha256.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # unit tests import mlbuild directly

ARCH = "x86_64"

HELLO_C = '#include <stdio.h>\n#include "greeting.h"\nint main(void) { puts(GREETING); return 0; }\n'
EXTRA_C = '#include <stdio.h>\nint main(void) { puts("extra"); return 0; }\n'
APP_C = '#include <stdio.h>\n#include "message.h"\nint main(void) { puts(MESSAGE); return 0; }\n'

# Every value rendered with {{ }} is shell-quoted by mlbuild: printf gets the greeting as one word.
HELLO_SH = """\
# build {{ recipe.name }} {{ recipe.version }}
printf '#define GREETING "%s"\\n' {{ vars.greeting }} > greeting.h
ccache clang -O1 -I. -c "$SRC/hello.c" -o hello.o
clang hello.o -o hello
mkdir -p "$OUT/bin"
cp hello "$OUT/bin/hello"
"""
EXTRA_SH = """\
ccache clang -O1 -c "$SRC/extra.c" -o extra.o
clang extra.o -o extra
mkdir -p "$OUT/bin"
cp extra "$OUT/bin/extra"
"""
APP_SH = """\
test -x "$SYSROOT/bin/hello"  # the dependency's output is in the sysroot
printf '#define MESSAGE "%s"\\n' {{ vars.message }} > message.h
ccache clang -O1 -I. -c "$SRC/app.c" -o app.o
clang app.o -o app
mkdir -p "$OUT/bin"
cp app "$OUT/bin/app"
"""
# A slow app script: prints its pid, then waits until the file vars.gate exists.
SLOW_APP_SH = """\
echo "started $$"
while [ ! -e {{ vars.gate }} ]; do sleep 0.05; done
echo "gate open"
""" + APP_SH + 'touch "$OUT/ran-by-$$"\n'

HOSTNAME_J2 = "mlbuild-{{ arch }}\n"


# The artifact cache's signing key of every synthetic project: a fixed key, so that the caches the tests fill
# (folders in tmp_path, servers: none is the per-user folder, so each restores only signed entries) are signed
# by a key the next project trusts (engine/cache/signing.py). Tests of trust itself make keys of their own.
TEST_KEY_NAME = "test-2026a"
TEST_KEY_FILE = ".cache/cache-signing.secret"


def key_pair(name: str, seed: bytes) -> tuple[str, str]:
    """(secret key text, public key text), as `mlbuild cache keygen` writes them, of a key made from seed (32 bytes)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{name}:{base64.b64encode(seed + public).decode()}", f"{name}:{base64.b64encode(public).decode()}"


TEST_SECRET, TEST_PUBLIC = key_pair(TEST_KEY_NAME, hashlib.sha256(b"mlbuild tests' cache signing key").digest())


def x86(*names: str) -> set[str]:
    """Task names for x86_64: x86("hello", "target") == {"build:hello-x86_64", "build:target-x86_64"}."""
    return {f"build:{name}-{ARCH}" for name in names}


ALL_TASKS = {"fetch:hello", "fetch:app"} | x86("hello", "extra", "app", "target", "images")


# --- tarballs -----------------------------------------------------------------

def make_tarball(path: Path, files: dict[str, str | bytes], top: str | None = None) -> str:
    """A reproducible .tar.gz of files ({relative name: content}) under top/; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1672531200
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a tiny TOML writer for recipes ------------------------------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_dumps(data: dict) -> str:
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in data.items())


# --- the synthetic project ------------------------------------------------------------

class DoitResult(NamedTuple):
    returncode: int
    executed: set
    up_to_date: set
    stdout: str
    stderr: str


def parse_tasks(stdout: str) -> tuple[set, set]:
    lines = stdout.splitlines()
    return {line[3:] for line in lines if line.startswith(".  ")}, {line[3:] for line in lines if line.startswith("-- ")}


def base_environment(extra: dict | None = None) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLBUILD_", "CCACHE_"))}
    environment["PYTHONPATH"] = str(SRC)
    # A crash of the interpreter itself (seen: a rare segfault in threaded doit runs) then names the
    # Python frames of every thread on stderr, which the failing test prints.
    environment["PYTHONFAULTHANDLER"] = "1"
    environment.update(extra or {})
    return environment


class Project:
    """A synthetic mlbuild project in a temporary folder, with helpers to edit and build it."""

    def __init__(self, root: Path, tarballs: Path):
        self.root = root
        self.tarballs = tarballs
        self.recipes: dict[str, dict] = {}  # what recipes/<name>.toml hold, as written by write_recipe
        self.gate: Path | None = None  # the file a slow script waits for (see test_interrupt_and_lock.py)
        self._source_serial = 0

    # files
    def path(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def edit(self, relative: str, old: str, new: str) -> None:
        text = self.read(relative)
        assert old in text, f"{old!r} not in {relative}"
        self.write(relative, text.replace(old, new))

    # recipes
    def write_recipe(self, name: str, data: dict) -> None:
        self.recipes[name] = data
        self.write(f"recipes/{name}.toml", toml_dumps(data))

    def update_recipe(self, recipe: str, /, **changes) -> None:
        """Rewrite recipes/<recipe>.toml with some fields changed."""
        self.write_recipe(recipe, {**self.recipes[recipe], **changes})

    def new_source(self, name: str, files: dict[str, str], top: str) -> dict:
        """Make a tarball in the tarballs folder; returns the recipe's sources entry for it."""
        self._source_serial += 1
        path = self.tarballs / f"{name}-{self._source_serial}.tar.gz"
        sha = make_tarball(path, files, top)
        return {"url": path.as_uri(), "sha256": sha}

    def copy_to(self, base: Path) -> "Project":
        """A copy of the whole project (build state and caches included) in base/project."""
        copy = Project(base / "project", base / "tarballs")
        shutil.copytree(self.root, copy.root, symlinks=True)
        copy.recipes = json.loads(json.dumps(self.recipes))
        copy._source_serial = self._source_serial
        return copy

    # running
    def doit(self, *args: str, env: dict | None = None, timeout: float = 120, verbose: bool = True) -> DoitResult:
        return run_doit(self.root, *args, env=env, timeout=timeout, verbose=verbose)

    def doit_background(self, *args: str, env: dict | None = None, verbose: bool = True) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "doit", *args], cwd=self.root, env=base_environment(_verbosely(env, verbose)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """python -m mlbuild.frontend.cli ARGS in the project."""
        return subprocess.run(
            [sys.executable, "-m", "mlbuild.frontend.cli", *args], cwd=self.root, env=base_environment(env),
            capture_output=True, text=True, timeout=60,
        )

    def run_binary(self, name: str, arch: str = ARCH) -> str:
        result = subprocess.run([self.root / "target" / arch / "bin" / name], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result
        return result.stdout

    def log(self, task: str) -> str:
        return self.read(f"build/logs/{task.replace(':', '_')}.log")

    def stamp(self, task: str) -> Path:
        return self.root / "build" / "state" / (task.replace(":", "_") + ".json")

    def leftovers(self) -> list[Path]:
        """Staging and moved-aside folders that must not survive a finished build."""
        found = []
        for folder in ("build", "target"):
            base = self.root / folder
            if base.exists():
                found += [p for p in base.rglob("*") if p.name.endswith((".staging", ".old", ".unpacking")) or p.name.endswith(".tmp")]
        return found


def _verbosely(env: dict | None, verbose: bool) -> dict:
    """The engine's tests read which tasks ran and which were up to date from the lines of doit's verbose
    output (`.  task`, `-- task`: the `verbose` key); verbose=False gives what a user sees by default."""
    return {"MLBUILD_VERBOSE": "1", **(env or {})} if verbose else dict(env or {})


def run_doit(cwd: Path, *args: str, env: dict | None = None, timeout: float = 120, verbose: bool = True) -> DoitResult:
    """`python -m doit ARGS` in cwd; the tasks it executed ('.  ') and found up to date ('-- '), verbose."""
    result = subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=cwd, env=base_environment(_verbosely(env, verbose)),
        capture_output=True, text=True, timeout=timeout,
    )
    executed, up_to_date = parse_tasks(result.stdout)
    return DoitResult(result.returncode, executed, up_to_date, result.stdout, result.stderr)


def make_project(base: Path, arches=(ARCH,)) -> Project:
    """The synthetic project in base/project (tarballs in base/tarballs, caches in the project)."""
    project = Project(base / "project", base / "tarballs")
    project.root.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", project.root / "dodo.py")
    shutil.copytree(REPO / "arches", project.root / "arches")  # the arches are the project's data, as its recipes
    project.write(
        "pyproject.toml",
        "[tool.mlbuild]\n"
        f"arches = {_toml_value(list(arches))}\n"
        'ccache_dir = ".cache/ccache"\n'
        'download_dir = ".cache/downloads"\n'
        "cache = []\n"  # no artifact cache: these tests see tasks run (tests/test_artifact_cache*.py use one)
        # No sandbox: some tests watch a script touch files in their tmp_path (a gate, a hostile value's
        # victim), which the sandbox's private /tmp would hide. tests/test_sandbox.py turns it on.
        'sandbox = "off"\n'
        "jobs = 2\n"
        f'cache_signing_key = "{TEST_KEY_FILE}"\n'
        f'cache_trusted_keys = ["{TEST_PUBLIC}"]\n',
    )
    key = project.write(TEST_KEY_FILE, TEST_SECRET + "\n")
    key.chmod(0o600)
    project.write("templates/build/hello.sh.j2", HELLO_SH)
    project.write("templates/build/extra.sh.j2", EXTRA_SH)
    project.write("templates/build/app.sh.j2", APP_SH)
    project.write("templates/target/etc/hostname.j2", HOSTNAME_J2)
    common = {"version": "1.0", "summary": "a test program", "homepage": "https://example.org/", "license": "MIT"}
    hello_source = project.new_source("hello", {"hello.c": HELLO_C, "extra.c": EXTRA_C}, "hello-1.0")
    app_source = project.new_source("app", {"app.c": APP_C}, "app-1.0")
    project.write_recipe("hello", {"name": "hello", **common, "build": "hello", "sources": [hello_source],
                                   "vars": {"greeting": "Hello, world!"}})
    project.write_recipe("extra", {"name": "extra", **common, "build": "extra", "source": "hello"})
    project.write_recipe("app", {"name": "app", **common, "build": "app", "sources": [app_source], "depends": ["hello"],
                                 "vars": {"message": "app says hi"}})
    return project


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the group marks into node ids
def pytest_collection_modifyitems(config, items):
    """The real-system tests build in the repository's own build/ and target/ (one tree, one lock): with
    pytest-xdist (scripts/test.sh: -n auto --dist loadgroup) they all go to one worker, one after another."""
    for item in items:
        if item.get_closest_marker("distribution"):
            item.add_marker(pytest.mark.xdist_group("distribution"))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Refuse to run when the grouping above did not take: two workers would unpack and build in the
    repository's one tree at once and fail in ways that look like mlbuild's bugs (seen with pytest 9.2)."""
    if not (hasattr(session.config, "workerinput") and session.config.getvalue("loadgroup")):
        return
    ungrouped = [item.nodeid for item in session.items
                 if item.get_closest_marker("distribution") and not item.nodeid.endswith("@distribution")]
    if ungrouped:
        print(f"tests/conftest.py: pytest-xdist did not group the real-system tests ({ungrouped[0]} has no "
                                f"@distribution): this pytest ({pytest.__version__}) and pytest-xdist do not "
                                "work together; pyproject.toml's [test] extra names the versions that do", file=sys.stderr, flush=True)
        pytest.exit("the real-system tests are not grouped on one worker", returncode=4)


@pytest.fixture
def project(tmp_path) -> Project:
    """The synthetic project for x86_64, not built yet."""
    return make_project(tmp_path)


@pytest.fixture(scope="session")
def built_once(tmp_path_factory) -> Project:
    """The synthetic project built once per session; tests get copies (see `built`)."""
    project = make_project(tmp_path_factory.mktemp("built-once"))
    result = project.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == ALL_TASKS
    return project


@pytest.fixture
def built(built_once, tmp_path) -> Project:
    """A copy of the built synthetic project, to change and rebuild at will.

    Copying a built project is itself pinned down (test_copying_the_whole_project_elsewhere_runs_nothing);
    it saves a first build per test.
    """
    return built_once.copy_to(tmp_path)


def assert_stamps_valid(project: Project) -> None:
    """Every task has a stamp, is up to date, and (but for fetch) its recorded output hash is its output's."""
    from mlbuild.engine.signature import is_up_to_date
    from mlbuild.frontend.project import Project as Loaded

    loaded = Loaded(project.root, environ={})
    for name, step in loaded.steps.items():
        stamp = loaded.stamps.read(name)
        assert stamp is not None, f"{name}: no stamp"
        assert is_up_to_date(step), f"{name}: not up to date"
        if not name.startswith("fetch:"):
            assert stamp["output_hash"] == step.output_hash(step.output), f"{name}: output differs from its stamp"


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    """Poll predicate until it returns something true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def process_alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def after_settings_line(stdout: str) -> str:
    """A command's output after its first line, which names the synthetic project's settings that differ
    from the defaults (pyproject.toml's arches, folders, cache, sandbox; jobs too on a machine without 2 CPUs)."""
    first, _, rest = stdout.partition("\n")
    assert first.startswith("settings: ") and " ccache_dir=.cache/ccache " in first and first.endswith(" (pyproject.toml)"), stdout
    return rest

"""The artifact cache and shared compiles against real servers on 127.0.0.1.

nginx with WebDAV (HTTP reads, PUT writes), SeaweedFS as S3, redis as ccache's
remote storage, distccd for distributed compiles (see tests/servers.py).
"""

import pytest

from conftest import ALL_TASKS, assert_stamps_valid, make_project, x86
from servers import start_distccd, start_nginx, start_redis, start_seaweedfs, stop
from test_artifact_cache import CACHED, faults, restored

from mlbuild.steps.distcc import distcc_slots


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = start_nginx(tmp_path_factory.mktemp("nginx"))
    yield server
    stop(server.process)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop(server.process)


def test_webdav_a_cold_build_pushes_and_a_fresh_clone_restores_every_task_over_http(nginx, tmp_path):
    url = f"{nginx.url}/cache/team"
    cold = make_project(tmp_path / "cold").doit(f"cache={url}")
    assert cold.returncode == 0 and faults(cold) == [], cold.stderr  # every lookup a 404: a miss, not a fault
    assert len(list((nginx.root / "cache" / "team").glob("*/manifest.json"))) == len(CACHED)
    fresh = make_project(tmp_path / "fresh")
    warm = fresh.doit(f"cache={url}")
    assert warm.returncode == 0, warm.stderr
    assert restored(warm) == CACHED and warm.executed == ALL_TASKS
    assert fresh.run_binary("app") == "app says hi\n"
    assert_stamps_valid(fresh)
    assert f"restored from {url}" in fresh.cli("explain", "hello-x86_64", env={"MLBUILD_CACHE": url}).stdout


def test_webdav_a_read_only_cache_is_read_but_never_written(nginx, tmp_path):
    url = f"{nginx.url}/cache/readonly-test"
    make_project(tmp_path / "cold").doit(f"cache={url}")
    before = sorted(p.relative_to(nginx.root) for p in (nginx.root / "cache" / "readonly-test").rglob("*"))
    fresh = make_project(tmp_path / "fresh")
    fresh.update_recipe("app", vars={"message": "only here"})
    result = fresh.doit(f"cache=ro:{url}")
    assert result.returncode == 0 and restored(result) == x86("hello", "extra")
    assert sorted(p.relative_to(nginx.root) for p in (nginx.root / "cache" / "readonly-test").rglob("*")) == before
    assert " PUT " not in (nginx.root.parent / "access.log").read_text().split("readonly-test")[-1]


def test_http_403_is_one_line_the_server_is_not_asked_again_and_the_build_goes_on(nginx, tmp_path):
    project = make_project(tmp_path)
    result = project.doit(f"cache={nginx.url}/forbidden/cache")
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1 and "HTTP 403 Forbidden" in lines[0] and "not used again" in lines[0], lines
    assert result.executed == ALL_TASKS and restored(result) == set()


def test_http_a_push_refused_by_the_server_is_one_line_and_the_build_succeeds(nginx, tmp_path):
    result = make_project(tmp_path).doit(f"cache={nginx.url}/readonly/cache")  # GET allowed, PUT denied
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1 and "PUT" in lines[0] and "403" in lines[0], lines


def _bucket(s3, name: str) -> str:
    s3.client().create_bucket(Bucket=name)
    return f"s3://{name}/mlbuild/artifacts?endpoint_url={s3.endpoint}"


@pytest.mark.slow
def test_s3_a_cold_build_pushes_and_a_fresh_clone_restores_with_credentials_from_the_environment(s3, tmp_path):
    url = _bucket(s3, "team-cache")
    cold_project = make_project(tmp_path / "cold")
    cold = cold_project.doit(f"cache={url}", env=s3.env())
    assert cold.returncode == 0 and faults(cold) == [], cold.stderr
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="team-cache")["Contents"]]
    assert len([k for k in keys if k.endswith("/manifest.json")]) == len(CACHED)
    assert all(k.startswith("mlbuild/artifacts/") for k in keys)
    fresh = make_project(tmp_path / "fresh")
    warm = fresh.doit(f"cache={url}", env=s3.env())
    assert warm.returncode == 0 and restored(warm) == CACHED, warm.stdout + warm.stderr
    assert fresh.run_binary("hello") == "Hello, world!\n"
    shown = "s3://team-cache/mlbuild/artifacts"
    assert f"restored from {shown}" in warm.stdout
    verify = fresh.cli("cache", "verify", env={**s3.env(), "MLBUILD_CACHE": url})
    assert verify.returncode == 0 and "verified 5 entries: 5 good, 0 bad" in verify.stdout, verify.stdout + verify.stderr
    stats = fresh.cli("cache", "stats", env={**s3.env(), "MLBUILD_CACHE": url})
    assert f"{shown} (read-write): 5 hits, 0 misses" in stats.stdout and "5 entries" in stats.stdout
    for output in (cold.stdout, cold.stderr, warm.stdout, warm.stderr, verify.stdout, stats.stdout):
        assert s3.secret_key not in output
    prune = fresh.cli("cache", "prune", "--max-size", "0", env={**s3.env(), "MLBUILD_CACHE": url})
    assert "removed 5 entries" in prune.stdout, prune.stdout + prune.stderr
    assert "Contents" not in s3.client().list_objects_v2(Bucket="team-cache")


def test_s3_wrong_credentials_are_one_line_never_printed_and_the_build_goes_on(s3, tmp_path):
    url = _bucket(s3, "locked")
    wrong_secret = "wrong-secret-never-printed"
    result = make_project(tmp_path).doit(f"cache={url}", env=s3.env(secret_key=wrong_secret))
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1 and "SignatureDoesNotMatch" in lines[0] and "not used again" in lines[0], lines
    assert wrong_secret not in result.stdout + result.stderr and s3.secret_key not in result.stdout + result.stderr
    assert result.executed == ALL_TASKS


def test_ccache_remote_storage_a_second_clean_tree_gets_remote_hits(tmp_path):
    url, process = start_redis(tmp_path / "redis")
    try:
        first = make_project(tmp_path / "first").doit(f"ccache_remote_storage={url}")
        assert first.returncode == 0, first.stderr
        second = make_project(tmp_path / "second")  # its own, empty, local ccache (.cache/ccache in the project)
        assert not (second.root / ".cache" / "ccache").exists()
        result = second.doit(f"ccache_remote_storage={url}")
        assert result.returncode == 0, result.stderr
        for task in x86("hello", "extra", "app"):
            assert "# ccache: 1 hits, 0 misses" in second.log(task), second.log(task)
        alone = make_project(tmp_path / "alone").doit()  # the same without the remote: no hits
        assert alone.returncode == 0
    finally:
        stop(process)


def test_distcc_compiles_on_distccd_behind_ccache_and_gives_the_same_binaries(tmp_path):
    from mlbuild.model.models import Config
    from mlbuild.steps.compiler import llvm_bin

    compilers = llvm_bin(Config(), "host")
    host, process, log = start_distccd(tmp_path / "distccd", compilers)
    try:
        remote = make_project(tmp_path / "remote")
        result = remote.doit(f"distcc_hosts={host}")
        assert result.returncode == 0, result.stdout + result.stderr
        # distcc falls back to compiling locally when distccd fails: distccd's own log proves it compiled.
        done = [line for line in log.read_text().splitlines() if "COMPILE_OK" in line]
        assert {name for name in ("hello.c", "extra.c", "app.c") if any(name in line for line in done)} == {"hello.c", "extra.c", "app.c"}
        local = make_project(tmp_path / "local")
        assert local.doit().returncode == 0
        for name in ("hello", "extra", "app"):
            assert remote.path(f"target/x86_64/bin/{name}").read_bytes() == local.path(f"target/x86_64/bin/{name}").read_bytes()
    finally:
        stop(process)


def test_distcc_jobs_are_sized_from_the_hosts_slots():
    assert distcc_slots("127.0.0.1:3632/6 build2/3") == 9
    assert distcc_slots("localhost farm1 --randomize") == 2 + 4

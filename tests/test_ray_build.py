"""Ray builds on a real Ray cluster started on this machine.

The cluster is a head node and a second node, each started with ``ray start`` as
separate processes on localhost with 1 CPU and a 100 MB object store each (the
2-core, 24 GiB test machine holds both: about 1 GB of memory in all). Tasks run in
Ray worker processes of either node, read the corpus and write OUT themselves;
every build is compared byte for byte with a local build of the same input.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wds_pipeline.builder import BuildError, BuildOptions, build_dataset

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'wds-pipeline[ray]')")
psutil = pytest.importorskip("psutil")

from shard_tasks import Failing, Killing  # noqa: E402  (tests/ is on sys.path, as in Ray's workers)

from wds_pipeline.builder.ray_executor import RayExecutor  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "wds_pipeline.cli"]
RAY = str(Path(sys.executable).parent / "ray")
TAG_VAR = "WDS_PIPELINE_TEST_RAY_CLUSTER"  # marks the processes this module started
SPLIT = "dev-clean"
SHARD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_processes(tag: str) -> list[psutil.Process]:
    """Every process of this cluster: those started with the tag in their environment
    (``ray start`` passes it to its daemons and the raylets to their workers) and all
    their descendants (the raylets' agents get an environment of their own)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if proc.uids().real == os.getuid() and proc.environ().get(TAG_VAR) == tag:
                found[proc.pid] = proc
                found.update((c.pid, c) for c in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return list(found.values())


def _stop_cluster(tag: str) -> None:
    """What ``ray stop`` does, limited to this cluster's processes (``ray stop`` would
    also stop any other Ray instance of this user on the machine); again while any is
    left, as a raylet may start a worker while the others stop."""
    deadline = time.monotonic() + 120
    while (procs := _cluster_processes(tag)) and time.monotonic() < deadline:
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Head + second node via ``ray start``; yields the cluster's address (HOST:PORT)."""
    tag = uuid.uuid4().hex
    # No token authentication: `ray start --head` turns it on by itself once an earlier
    # local Ray run left a token in ~/.ray, and this process, which imported ray before
    # the fixture ran, could not pick a token up any more (Ray reads its settings at
    # import). It is a throwaway cluster of this test, on this machine.
    auth = {"RAY_AUTH_MODE": "disabled"}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    # Short: Ray's unix socket paths live under it and must stay under 108 bytes.
    temp = tempfile.mkdtemp(prefix="wr", dir="/tmp")
    env = dict(os.environ, **{TAG_VAR: tag, "RAY_USAGE_STATS_ENABLED": "0"})
    # Workers import this checkout's wds_pipeline and tests/shard_tasks.py.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(REPO / "tests")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    port = _free_port()
    node = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1",
            "--disable-usage-stats"]
    try:
        for args in (["--head", f"--port={port}", "--include-dashboard=false",
                      f"--temp-dir={temp}", f"--ray-client-server-port={_free_port()}"],
                     [f"--address=127.0.0.1:{port}"]):
            started = subprocess.run([RAY, "start", *args, *node,
                                      f"--dashboard-agent-listen-port={_free_port()}"],
                                     env=env, capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stdout + started.stderr
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(tag)
        subprocess.run(["rm", "-rf", temp], check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert _cluster_processes(tag) == []


@pytest.fixture(scope="module")
def ray_driver(ray_cluster, gcs_emulator) -> Iterator[str]:
    """This process connected to the cluster; the workers get the GCS emulator settings
    through the job's runtime_env. Yields the cluster address."""
    env_vars = {"STORAGE_EMULATOR_HOST": gcs_emulator.url,
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    ray.init(address=ray_cluster, runtime_env={"env_vars": env_vars},
             logging_level=logging.WARNING)
    try:
        deadline = time.monotonic() + 120
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.monotonic() < deadline, f"second node never joined in 120 s: {ray.nodes()}"
            time.sleep(0.5)
        yield ray_cluster
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 short LibriSpeech-layout files, one of them empty (a recorded reject)."""
    from wds_pipeline.synth import synth_librispeech

    root = tmp_path_factory.mktemp("ray-corpus") / "LibriSpeech"
    synth_librispeech(str(root), speakers=3, chapters_per_speaker=1, utterances_per_chapter=4,
                      parts=(SPLIT,), min_seconds=1.0, max_seconds=2.0, seed=3)
    victim = sorted(root.rglob("*.flac"))[5]
    victim.write_bytes(b"")
    return root


def _build(corpus: Path, out: str, executor=None, **options):
    opts = BuildOptions(shard_size=SHARD_SIZE, workers=1, progress=False, **options)
    return build_dataset("librispeech", str(corpus), out, options=opts, executor=executor,
                         log=lambda msg: None)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def local_build(corpus, tmp_path_factory) -> dict[str, bytes]:
    """Every file of an in-process build: shards, journal entries, index."""
    out = tmp_path_factory.mktemp("ray-local") / "out"
    result = _build(corpus, str(out))
    assert result.splits[SPLIT].counts.rejected == 1
    return tree_bytes(out)


def test_ray_build_to_local_disk_is_byte_identical_to_a_local_build(
        ray_driver, corpus, local_build, tmp_path):
    result = _build(corpus, str(tmp_path / "out"), RayExecutor(ray_driver))
    split = result.splits[SPLIT]
    assert (split.counts.inputs, split.counts.written, split.counts.rejected) == (12, 11, 1)
    assert split.shards_built == 6
    assert tree_bytes(tmp_path / "out") == local_build


def test_ray_build_to_gcs_is_byte_identical_to_a_local_build(
        ray_driver, corpus, local_build, gcs_emulator):
    fs = gcs_emulator.fs
    prefix = f"{gcs_emulator.bucket}/ray-{uuid.uuid4().hex[:8]}"
    result = _build(corpus, f"gs://{prefix}", RayExecutor(ray_driver),
                    storage_options=gcs_emulator.storage_options)
    assert result.splits[SPLIT].counts.written == 11
    remote = {path.removeprefix(prefix + "/"): fs.cat_file(path) for path in fs.find(prefix)}
    assert remote == local_build


def test_a_worker_killed_mid_task_is_retried_and_every_input_accounted_for(
        ray_driver, corpus, local_build, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    victims = {"shard-000001.tar", "shard-000004.tar"}
    out = tmp_path / "out"
    result = _build(corpus, str(out), RayExecutor(ray_driver, fn=Killing(str(markers), victims)))
    c = result.splits[SPLIT].counts
    assert c.inputs == c.written + c.rejected == 12
    built = {p.name: p.read_text() for p in markers.glob("*.built")}
    assert len(built) == 6
    for name in victims:  # killed once, then built by another worker process
        killed_pid = (markers / f"{SPLIT}-{name}.killed").read_text()
        assert built[f"{SPLIT}-{name}.built"] != killed_pid
    assert tree_bytes(out) == local_build  # the killed attempts' temp tars were removed


def test_a_failing_shard_fails_the_build_without_an_index_and_a_rerun_resumes(
        ray_driver, corpus, local_build, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BuildError) as err:
        _build(corpus, str(out), RayExecutor(ray_driver, fn=Failing({"shard-000002.tar"})))
    assert f"building {out / SPLIT / 'shard-000002.tar'} failed: RuntimeError: injected " \
           "failure in shard-000002.tar" in str(err.value)
    assert "rerun the same command to resume" in str(err.value)
    assert not (out / SPLIT / "index.json").exists()
    # Ray does not stop the other shards: all five are journaled.
    assert len(list((out / SPLIT / "_build").glob("*.json"))) == 5

    result = _build(corpus, str(out), RayExecutor(ray_driver))
    split = result.splits[SPLIT]
    assert (split.shards_built, split.shards_reused) == (1, 5)
    assert tree_bytes(out) == local_build


def test_cli_ray_from_a_build_config(ray_cluster, corpus, local_build, tmp_path):
    """`executor: ray` and `ray: HOST:PORT` in a build YAML; the CLI is its own Ray driver."""
    config = tmp_path / "build.yaml"
    config.write_text(f"executor: ray\nray: {ray_cluster}\nshard_size: {SHARD_SIZE}\n")
    out = tmp_path / "out"
    run = subprocess.run(CLI + ["build", "librispeech", str(corpus), str(out), "--config",
                                str(config), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"building 6 shards on Ray ({ray_cluster})" in run.stderr
    assert "12 inputs, 11 written, 1 rejected" in run.stdout
    assert tree_bytes(out) == local_build


def test_ray_local_n_starts_its_own_instance_with_ray_address_set(ray_cluster, corpus,
                                                                  local_build, tmp_path):
    """`--ray local:N` on a machine whose environment names a running cluster (RAY_ADDRESS,
    as `ray start` tells its users to set): a fresh local instance of N CPUs, not a
    connection to that cluster refused for asking for CPUs (issue 19, point 11)."""
    out = tmp_path / "out"
    env = dict(os.environ, RAY_ADDRESS=ray_cluster, RAY_USAGE_STATS_ENABLED="0")
    run = subprocess.run(CLI + ["build", "librispeech", str(corpus), str(out), "--ray",
                                "local:2", "--shard-size", str(SHARD_SIZE), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert "building 6 shards on Ray (local:2)" in run.stderr
    assert "12 inputs, 11 written, 1 rejected" in run.stdout
    assert tree_bytes(out) == local_build


def test_ray_flag_without_ray_installed_names_the_install_command(corpus, tmp_path):
    # Ray is installed here, so the child process hides it: a None entry in sys.modules
    # makes `import ray` raise ImportError exactly as on a machine without it.
    code = ("import sys; sys.modules['ray'] = None\n"
            "from wds_pipeline.cli import main\n"
            f"sys.exit(main(['build', 'librispeech', {str(corpus)!r}, {str(tmp_path / 'o')!r}, "
            "'--ray', 'auto', '--no-progress']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--ray needs the ray package" in run.stderr
    assert "pip install 'wds-pipeline[ray]'" in run.stderr
    assert not (tmp_path / "o" / SPLIT).exists()


@pytest.mark.parametrize("address", ["nowhere", "local:0", "ray://host"])
def test_bad_ray_address_is_a_usage_error(address, corpus, tmp_path):
    run = subprocess.run(CLI + ["build", "librispeech", str(corpus), str(tmp_path / "o"),
                                "--ray", address], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert run.returncode == 2
    assert f"--ray {address!r}: use auto, ray://HOST:PORT, HOST:PORT or local:N" in run.stderr


def test_executor_local_with_ray_address_is_refused(corpus, tmp_path):
    run = subprocess.run(CLI + ["build", "librispeech", str(corpus), str(tmp_path / "o"),
                                "--executor", "local", "--ray", "auto"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2
    assert "--ray auto asks for a Ray build but executor is local" in run.stderr

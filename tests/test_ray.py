"""`scale.backend=ray` on a real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`).

The rows must be a single process's, whoever played them: with the ALFWorld expert, and with one or two
collectors against a loopback policy server whose answers depend only on the request and its seed. A
collector SIGKILLed after its k-th episode (a hook, not a timer) is restarted and its unfinished
episodes are played again: every episode once. A driver killed mid-run is resumed by running the command
again. A cluster without the GPUs asked for stops the run before any episode. The cluster, the driver,
the collectors and the env actors talk over 127.0.0.1 only, as does a Ray that agent-sft starts itself.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
import ray  # installed by scripts/install.sh --test (the `ray` extra)
from policy_server import PolicyServer

import agent_sft
from agent_sft.config import ConfigError, load_config
from agent_sft.rollout.ray_pool import LOOPBACK, init_ray

pytestmark = [pytest.mark.alfworld]

TIMING = ("started_at", "duration_s")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (2 CPUs each) bound to 127.0.0.1, token auth off and a short temp dir
    (socket paths)."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # a Ray another test started in this process
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tests = os.path.dirname(os.path.abspath(__file__))  # the nodes' workers import the test envs from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs("/tmp/ray", exist_ok=True)  # Cluster records the address there whatever the temp dir
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, temp_dir=temp, node_ip_address=LOOPBACK))
    second = c.add_node(num_cpus=2, object_store_memory=200 * 1024**2, node_ip_address=LOOPBACK)
    c.wait_for_nodes()
    yield c, second
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def overrides(folder, *extra):
    return [f"output.dir={folder}", "env.num_episodes=6", "env.max_steps=6", "data.val_batch_size=2", "env.seed=3",
            "output.flush_every_episodes=2", *extra]


def on_ray(c, *extra):
    return ["scale.backend=ray", f"scale.address={c.address}", "scale.max_restarts=2", "scale.chunk_episodes=2", *extra]


def rows_of(folder):
    raw = agent_sft.load(str(folder), "raw")
    out = {}
    for split, rows in raw.items():
        for r in rows:
            r = {k: v for k, v in r.items() if k not in TIMING}
            r["steps"] = [{k: v for k, v in s.items() if k != "latency_s"} for s in r["steps"]]
            assert r["episode_id"] not in out, f"episode {r['episode_id']} is in the folder twice"
            out[r["episode_id"]] = (split, r)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The expert run in this process (scale.backend=local)."""
    folder = tmp_path_factory.mktemp("ray") / "local"
    agent_sft.collect(load_config(None, overrides(folder), environ={}))
    return rows_of(folder)


def test_a_ray_run_gives_the_single_process_rows(cluster, reference, tmp_path):
    c, _ = cluster
    result = agent_sft.collect(load_config(None, overrides(tmp_path / "ray", *on_ray(c, "scale.collectors=2")), environ={}))
    assert rows_of(tmp_path / "ray") == reference and len(reference) == 6
    run = result.run
    assert run["backend"] == "ray" and run["episodes"] == 6 and run["actors_restarted"] == 0
    assert sum(x["episodes"] for x in run["collectors"]) == 6 and all(x["episodes"] for x in run["collectors"])
    assert "on Ray: 2 collectors" in (tmp_path / "ray" / "README.md").read_text()


@pytest.mark.extended
def test_one_or_two_collectors_against_a_policy_server_give_the_same_rows(cluster, tmp_path):
    c, _ = cluster
    with PolicyServer(ms_per_token=1.0) as server:
        http = ["policy.type=openai", "policy.model=det", f"policy.base_url={server.url}", "policy.do_sample=true",
                "loop.mode=async"]
        for n in (1, 2):
            agent_sft.collect(load_config(None, overrides(tmp_path / f"c{n}", *http, *on_ray(c, f"scale.collectors={n}")),
                                          environ={}))
    one, two = rows_of(tmp_path / "c1"), rows_of(tmp_path / "c2")
    assert one == two and len(one) == 6
    assert all(r["policy"]["kind"] == "openai" and r["steps"] for _, r in one.values())


def test_a_collector_killed_after_its_second_episode_is_replaced_and_every_episode_is_played_once(
        cluster, reference, tmp_path, monkeypatch):
    c, _ = cluster
    monkeypatch.setenv("AGENT_SFT_RAY_KILL_AFTER", "0:2")  # collector 0 SIGKILLs itself after its 2nd episode
    result = agent_sft.collect(load_config(None, overrides(tmp_path / "k", *on_ray(c, "scale.collectors=2")), environ={}))
    assert rows_of(tmp_path / "k") == reference
    run = result.run
    assert run["actors_restarted"] == 1 and run["collectors"][0]["restarts"] == 1
    assert run["requeued_episodes"] >= 1 and run["episodes"] == 6


def _kill_once_sealed(cmd, folder, env, timeout=240):
    """Run `cmd`; SIGKILL its process group once a raw shard is sealed. True when it was killed."""
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    raw = os.path.join(folder, "data", "raw")
    while p.poll() is None and time.monotonic() < deadline:
        if any(f.endswith(".arrow") and not f.startswith(".") for _, _, fs in os.walk(raw) for f in fs):
            time.sleep(0.2)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.05)
    p.wait(timeout=60)
    return False


@pytest.mark.extended
def test_a_killed_driver_is_resumed_by_running_the_command_again(cluster, reference, tmp_path):
    c, _ = cluster
    folder = tmp_path / "d"
    cmd = [sys.executable, "-m", "agent_sft", "collect", *overrides(folder, *on_ray(c, "scale.collectors=2")),
           "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    assert _kill_once_sealed(cmd, str(folder), env)
    partial = rows_of(folder)
    assert len(partial) < 6 and all(reference[k] == v for k, v in partial.items())
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows_of(folder) == reference


def test_a_policy_server_failing_every_request_stops_the_ray_run_with_exit_3(cluster, tmp_path, capsys):
    import partial_env  # noqa: F401 - registers partial-test (the collectors get its spec from the driver)

    from agent_sft.cli import main

    c, _ = cluster
    with PolicyServer() as server:
        url = server.failing_url("500")
        code = main(["collect", "--no-progress", f"output.dir={tmp_path / 'f'}", "env.env_name=partial-test",
                     "env.task_types=[play]", "env.num_episodes=4", "data.val_batch_size=2", "env.backend=thread",
                     "policy.type=openai", "policy.model=det", f"policy.base_url={url}", "policy.max_retries=0",
                     "policy.max_consecutive_failures=2", *on_ray(c)])
    assert code == 3  # the collector's error reached the driver as itself
    assert f"agent-sft collect: error: the policy server at {url} failed 2 requests in a row" in capsys.readouterr().err


def test_a_cluster_without_the_gpus_asked_for_stops_before_any_episode(cluster, tmp_path):
    c, _ = cluster
    with pytest.raises(ConfigError, match="GPUs"):
        agent_sft.collect(load_config(None, overrides(tmp_path / "g", *on_ray(c, "scale.gpus_per_collector=1")),
                                      environ={}))
    assert agent_sft.load(str(tmp_path / "g"), "raw")["train"].num_rows == 0


def test_env_actors_spread_over_the_cluster_and_a_crashed_or_hung_env_ends_only_its_episode(cluster, monkeypatch):
    import hang_env  # noqa: F401 - registers hang-test

    from agent_sft.rollout import Collector, EnvPool
    from agent_sft.rollout.ray_pool import RayEnvPool

    c, _ = cluster
    monkeypatch.setenv("RAY_ADDRESS", c.address)
    cfg = load_config(None, ["env.env_name=hang-test", "env.backend=ray", "data.val_batch_size=3", "env.step_timeout_s=3",
                             "scale.cpus_per_env=0.5", "loop.mode=async"], environ={})
    from agent_sft.policies.expert import ExpertPolicy

    with Collector(cfg, ExpertPolicy(env_name="hang-test"), env_kwargs={"hang_s": 60}) as col:
        plan = col.plan()
        pool = col.pool
        assert isinstance(pool, EnvPool) and isinstance(pool, RayEnvPool) and pool.accepted == ["hang_s"]
        eps = {e.task_id: e for e in col.run(plan)}
        stats = col.stats
    assert len(eps) == 6
    assert all(eps[f"ok/{k}"].success for k in range(4))
    assert eps["hang/0"].end_reason == "error" and "timed out after 3 s" in eps["hang/0"].error
    assert eps["raise/0"].end_reason == "error" and "RuntimeError" in eps["raise/0"].error
    assert stats.workers_replaced == 2


def _loopback(host):
    ip = ipaddress.ip_address(host)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def _off_loopback(processes):
    """The TCP sockets of `processes` and their descendants bound to or dialling a non-loopback address
    (listening on all interfaces included)."""
    seen, off = set(), []
    for p in processes:
        try:
            family = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for q in family:
            if q.pid in seen:
                continue
            seen.add(q.pid)
            try:
                name, conns = q.name(), q.net_connections(kind="tcp")
            except psutil.Error:  # a worker that ended meanwhile
                continue
            off += [(name, s.status, s.laddr, s.raddr) for s in conns
                    if (s.laddr and s.laddr.port and not _loopback(s.laddr.ip)) or (s.raddr and not _loopback(s.raddr.ip))]
    return seen, off


@ray.remote(num_cpus=0)
class _Peer:
    def pid(self) -> int:
        return os.getpid()

    def pid_of(self, other) -> int:
        return ray.get(other.pid.remote())


def test_the_cluster_the_driver_and_the_actors_talk_over_loopback_only(cluster):
    """An actor on each node, one calling the other: every node address and every socket of the driver, the
    nodes' Ray processes and their workers is loopback."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    c, _ = cluster
    if not ray.is_initialized():
        init_ray(c.address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    peers = [_Peer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
             for n in nodes]
    try:
        pids = ray.get([p.pid.remote() for p in peers], timeout=120)
        assert ray.get(peers[0].pid_of.remote(peers[1]), timeout=60) == pids[1]
        hosts = [c.address.rsplit(":", 1)[0], ray.get_runtime_context().gcs_address.rsplit(":", 1)[0],
                 ray.util.get_node_ip_address(), *(n["NodeManagerAddress"] for n in nodes)]
        assert len(nodes) == 2 and all(_loopback(h) for h in hosts), hosts
        ray_processes = [psutil.Process(info.process.pid) for node in c.list_all_nodes()
                         for infos in node.all_processes.values() for info in infos]
        seen, off = _off_loopback([psutil.Process(), *ray_processes])
        assert set(pids) <= seen and off == []
    finally:
        for p in peers:
            ray.kill(p)


def test_a_ray_without_its_loopback_switch_is_refused_in_one_line(monkeypatch):
    from ray._private import ray_constants

    from agent_sft.rollout.ray_pool import RayLoopbackError

    monkeypatch.delattr(ray_constants, "ENABLE_RAY_CLUSTER")
    for address in (None, "127.0.0.1:6379", "ray://localhost:10001"):
        with pytest.raises(RayLoopbackError, match=rf"^Ray {ray.__version__} has no .*ENABLE_RAY_CLUSTER.*ray start") as e:
            init_ray(address)
        assert "\n" not in str(e.value)


def test_a_ray_started_here_binds_loopback_only(cluster):
    ray.shutdown()  # leave the test cluster: the next test that needs it joins it again
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    temp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    try:
        init_ray(None, num_cpus=1, object_store_memory=100 * 1024**2, _temp_dir=temp)
        hosts = [ray.get_runtime_context().gcs_address.rsplit(":", 1)[0], *(n["NodeManagerAddress"] for n in ray.nodes())]
        assert len(hosts) == 2 and all(_loopback(h) for h in hosts), hosts
        started = [p for p in psutil.Process().children() if p.pid not in before]
        seen, off = _off_loopback([psutil.Process(), *started])
        assert len(seen) > 3 and off == []
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_policy_and_a_pool_backend_registered_in_the_driver_play_on_the_collectors(cluster, tmp_path):
    from agent_sft.policies.registry import POLICIES, PolicyEntry, register_policy
    from agent_sft.rollout.pools import BACKENDS, PoolBackend, register_pool

    c, _ = cluster
    register_policy("toy-ray", PolicyEntry("toy_policy:ToyPolicy", needs_model=False))
    register_pool("inline-ray", PoolBackend("toy_pool:InlinePool", True, "every env inline in the calling thread"))
    try:
        args = ["env.env_name=taxi", "env.pool=inline-ray", "env.num_episodes=2", "env.max_steps=3", "policy.type=toy-ray"]
        agent_sft.collect(load_config(None, [f"output.dir={tmp_path / 'here'}", *args], environ={}))
        agent_sft.collect(load_config(None, [f"output.dir={tmp_path / 'ray'}", *args, *on_ray(c)], environ={}))
    finally:
        POLICIES.pop("toy-ray", None)
        BACKENDS.pop("inline-ray", None)
    here, there = rows_of(tmp_path / "here"), rows_of(tmp_path / "ray")
    assert there == here and len(here) == 2
    assert all(r["policy"]["model"] == "toy-north-v1" for _, r in there.values())

"""`agent-sft collect` when things go wrong: a policy server that is not there or goes away, SIGTERM, two
collects writing one folder, a full disk, a refused key, a broken filter; and what the user is told."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serve_helpers import TESTS, alive, children, session_processes, wait_for

from agent_sft.cli import main
from agent_sft.envs import TaskSpec, register
from agent_sft.policies.openai import UNREACHABLE_AFTER

LENGTHS = (2, 3, 2, 3, 2, 3)


class WalkEnv:
    """Won after a fixed number of steps, whatever the action (task `walk/<i>/<length>`)."""

    def __init__(self, max_steps=50, **_):
        self._tasks = [TaskSpec(f"walk/{i}/{n}", "walk", "test") for i, n in enumerate(LENGTHS)]

    def tasks(self):
        return list(self._tasks)

    def _info(self):
        return {"admissible_actions": ["go", "look"], "task_id": self.task_id, "task_type": "walk",
                "goal": f"walk {self.length} steps", "won": self.pos >= self.length, "expert_plan": ["go"]}

    def reset(self, *, seed=None, options=None):
        self.task_id = options["task_id"]
        self.length, self.pos = int(self.task_id.split("/")[-1]), 0
        return f"You are at 0. Your task is to: walk {self.length} steps", self._info()

    def step(self, action):
        self.pos += 1
        info = self._info()
        return f"You are at {self.pos}.", float(info["won"]), info["won"], False, info

    def close(self):
        pass


register("walk-test", WalkEnv)


class ChatServer:
    """An OpenAI-compatible server on loopback.

    Answers `/models` and `/chat/completions` (`<action>go</action>`, or `status` with an error body);
    after `budget` chat answers it goes away: the request in hand gets no answer and the port is closed.
    """

    def __init__(self, status: int = 200, budget: int | None = None, hang_after: int | None = None):
        self.status, self.budget, self.answered = status, budget, 0
        self.hang_after, self.held = hang_after, 0  # past `hang_after` answers, requests are held until close
        self._released = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with server._lock:
                    if server.budget is not None and server.answered >= server.budget:
                        threading.Thread(target=server.close, daemon=True).start()
                        self.close_connection = True
                        return  # no answer: the client sees the connection drop
                    held = server.hang_after is not None and server.answered >= server.hang_after
                    server.held += held
                    server.answered += not held
                if held:
                    server._released.wait(60)
                    return
                if server.status != 200:
                    self._send(server.status, {"error": {"message": f"refused with {server.status}"}})
                    return
                self._send(200, {"choices": [{"message": {"content": "<think></think><action>go</action>"},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 3}})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self._closed = False

    def close(self):
        self._released.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh cwd, no ALFWorld data (the built-in games play) and none of the SFT_* switches."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "no_alfworld_data").mkdir()
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "no_alfworld_data"))
    for var in ("COLLECT_SFT", "SFT_SEED", "SFT_REQUIRE_SUCCESS", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def raw_rows(folder) -> list[dict]:
    from datasets import load_dataset

    ds = load_dataset(os.path.abspath(str(folder)), "raw", download_mode="force_redownload")
    return [r for split in ds.values() for r in split]


def walk_args(folder, *more):
    return ["collect", "--no-progress", "env.env_name=walk-test", "data.val_batch_size=2", "env.step_timeout_s=10",
            "output.flush_every_episodes=1", f"output.dir={folder}", *more]


def openai_args(url, *more):
    return ["policy.type=openai", "policy.model=m", f"policy.base_url={url}", "policy.max_retries=0",
            "policy.request_timeout_s=5", *more]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --- a policy server that is not there, or goes away ------------------------------------------------

def test_no_server_at_base_url_fails_at_once_and_writes_nothing(workdir, capsys):
    from fixtures_models import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    t = time.monotonic()
    assert main(["collect", "policy.type=openai", f"policy.base_url={url}", "policy.model=x", "output.dir=ds"]) == 2
    assert time.monotonic() - t < 15
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert line.startswith(f"agent-sft collect: error: no policy server answers at {url} (GET {url}/models: ConnectError")
    assert "check that the server is running" in line and "policy.base_url" in line and "Nothing was played" in line
    assert not (workdir / "ds").exists()


def test_server_that_goes_away_stops_the_run_and_a_rerun_replays_what_it_lost(workdir, capsys):
    server = ChatServer(budget=5)
    try:
        assert main(walk_args("ds", *openai_args(server.url))) == 3  # a run that failed for good
    finally:
        server.close()
    err = capsys.readouterr().err
    assert f"error: the policy server at {server.url} stopped answering: {UNREACHABLE_AFTER} requests in a row got no answer" in err
    assert "Restart the server (or fix policy.base_url), then run the same command again" in err
    assert "Traceback" not in err
    first = raw_rows("ds")
    won = [r for r in first if r["success"]]
    assert won and all(r["end_reason"] in ("success", "error") for r in first)
    # episodes whose request was lost before the server was declared gone (an answer to a request sent
    # before it went away may still reset the count once)
    assert len(first) - len(won) <= UNREACHABLE_AFTER

    again = ChatServer()
    try:
        assert main(walk_args("ds", *openai_args(again.url))) == 0
    finally:
        again.close()
    out = capsys.readouterr().out
    assert f"Resuming ds: {len(won)} episodes already there are skipped." in out  # error episodes are played again
    rows = raw_rows("ds")
    assert sorted(r["task_id"] for r in rows) == sorted(f"walk/{i}/{n}" for i, n in enumerate(LENGTHS))
    assert all(r["success"] for r in rows)


@pytest.mark.parametrize("status, hint", [
    (401, "Set the API key in the variable policy.api_key_env names"),
    (404, "Set policy.model to a model the server serves"),
])
def test_refused_key_or_unknown_model_says_what_to_fix(workdir, capsys, status, hint):
    server = ChatServer(status=status)
    try:
        assert main(walk_args("ds", *openai_args(server.url))) == 2
    finally:
        server.close()
    err = capsys.readouterr().err
    assert f"error: HTTP {status} from the server's /chat/completions: refused with {status}" in err
    assert hint in err and "kept and skipped" in err
    assert "run the same command again to resume" not in err and "Traceback" not in err
    assert server.answered <= 2  # one request per episode of the first turn, none retried: the answer stops the run


# --- dotted overrides anywhere --------------------------------------------------------------------

def test_overrides_and_options_in_any_order(workdir, capsys, monkeypatch):
    from test_rollout import PlanPolicy

    import agent_sft.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda cfg, **kw: PlanPolicy())
    argv = ["collect", "output.dir=ds", "--no-progress", "env.num_episodes=2", "env.env_name=walk-test",
            "--config", str(workdir / "run.yaml"), "data.val_batch_size=2"]
    (workdir / "run.yaml").write_text("env:\n  seed: 5\n")
    assert main(argv) == 0
    assert "Collected 2 episodes" in capsys.readouterr().out
    rows = raw_rows("ds")
    assert len(rows) == 2 and {r["run_seed"] for r in rows} == {5}


# --- fatal errors: one line that says what fixes them ---------------------------------------------

@pytest.mark.parametrize("wrapped", [False, True], ids=["oserror", "wrapped"])
def test_disk_full_is_one_line_naming_the_folder_and_free_space(workdir, capsys, monkeypatch, wrapped):
    import shutil

    from test_rollout import PlanPolicy

    import agent_sft.policies.registry as registry
    from agent_sft.dataset import shards
    from agent_sft.errors import DatasetError

    monkeypatch.setattr(registry, "make_policy", lambda cfg, **kw: PlanPolicy())
    real, calls = shards.write_shard, []

    def write_shard(path, config, rows, meta):
        calls.append(config)
        if len(calls) <= 2:  # the first episode's raw and sft shards fit
            return real(path, config, rows, meta)
        full = OSError(errno.ENOSPC, "No space left on device")
        if not wrapped:
            raise full
        raise DatasetError(f"{path}: cannot seal the shard") from full

    monkeypatch.setattr(shards, "write_shard", write_shard, raising=True)
    assert main(walk_args("ds")) == 2
    captured = capsys.readouterr()
    (line,) = error_lines(captured.err)
    free_mib = shutil.disk_usage(workdir / "ds").free / 2**20
    m = re.fullmatch(r"agent-sft collect: error: no space left on the device of ds \(([\d.]+) MiB free there\); "
                     r"the episodes sealed so far are kept: free some space and run the same command again to resume", line)
    assert m and abs(float(m.group(1)) - free_mib) < 64, line
    assert "Traceback" not in captured.err + captured.out
    monkeypatch.setattr(shards, "write_shard", real)
    assert len(raw_rows("ds")) == 1


def test_filter_that_raises_says_to_fix_it_and_the_fixed_rerun_completes(workdir, capsys, monkeypatch):
    import glob

    from test_rollout import PlanPolicy

    import agent_sft.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda cfg, **kw: PlanPolicy())
    (workdir / "keep.py").write_text("def keep(row):\n    return row['no_such_column'] > 0\n")
    args = walk_args("ds", "filters.callable=keep.py:keep")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "raised on episode" in err and "KeyError" in err
    assert "Fix the filter (filters.*), then run the same command again: the episodes are kept in raw" in err
    assert "Traceback" not in err
    kept = glob.glob(str(workdir / "ds" / "data" / "raw" / "*" / "*.arrow"))
    assert kept  # the episodes played before the filter raised

    (workdir / "keep.py").write_text("def keep(row):\n    return row['episode_length'] > 2\n")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Resuming ds: " in out and "dropped by filter callable:keep 3" in out
    assert len(raw_rows("ds")) == len(LENGTHS)


def test_damaged_shard_points_to_repair_and_the_repaired_folder_resumes(workdir, capsys, monkeypatch):
    import glob

    from test_rollout import PlanPolicy

    import agent_sft.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda cfg, **kw: PlanPolicy())
    assert main(walk_args("ds", "env.num_episodes=3")) == 0
    (shard,) = glob.glob(str(workdir / "ds" / "data" / "raw" / "*" / "*.arrow"))
    with open(shard, "r+b") as fh:
        fh.truncate(100)
    capsys.readouterr()
    assert main(walk_args("ds")) == 2
    err = capsys.readouterr().err
    assert err.startswith("agent-sft collect: error: ") and "run `agent-sft repair " in err
    assert "run the same command again to resume" not in err and "Traceback" not in err
    assert main(["repair", "ds"]) == 0
    assert main(walk_args("ds")) == 0
    assert len(raw_rows("ds")) == len(LENGTHS)


# --- SIGTERM, and two collects on one folder (real ALFWorld games, planner expert) --------------------

ALFWORLD = pytest.mark.skipif(not __import__("importlib").util.find_spec("alfworld"), reason="needs the alfworld package")


def _collect_cmd(folder, *more):
    return [sys.executable, "-m", "agent_sft", "collect", "--no-progress", "output.flush_every_episodes=1",
            f"output.dir={folder}", *more]


@ALFWORLD
@pytest.mark.alfworld
@pytest.mark.extended
def test_sigterm_seals_finished_episodes_stops_workers_and_the_rerun_completes(workdir):
    cmd = _collect_cmd("ds", "env.num_episodes=4", "data.val_batch_size=2")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("1/4 episodes" in line for line in lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "".join(lines) + proc.stderr.read()
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    err = proc.stderr.read()
    reader.join(5)
    progress = max(int(m.group(1)) for line in lines if (m := re.match(r"\s+(\d+)/4 episodes", line)))
    assert proc.returncode == 143, err
    m = re.search(r"agent-sft collect: terminated \(SIGTERM\); the (\d+) episodes this run finished are sealed in ds; "
                  r"run the same command again to play the rest\n$", err)
    assert m and "Traceback" not in err, err
    sealed = int(m.group(1))
    assert 1 <= progress <= sealed <= 4
    for _ in range(50):  # the env workers went with it
        if not session_processes(proc.pid):
            break
        time.sleep(0.1)
    assert session_processes(proc.pid) == []
    first = raw_rows(workdir / "ds")
    assert len(first) == sealed and all(r["success"] for r in first)

    again = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Resuming ds: {sealed} episodes already there are skipped." in again.stdout
    assert f"Collected {4 - sealed} episodes" in again.stdout
    rows = raw_rows(workdir / "ds")
    assert len(rows) == len({r["episode_id"] for r in rows}) == 4
    assert {r["episode_id"] for r in first} <= {r["episode_id"] for r in rows}


@pytest.mark.parametrize("stuck", ["env step", "policy request"])
def test_sigterm_to_the_main_process_alone_stops_its_workers_at_once(workdir, stuck):
    """SIGTERM to the collect process only (not its group) while both env workers are inside a step that
    takes a minute, or while both policy requests wait on a server that does not answer: the run seals what
    finished and exits 143 within seconds, and no process it started survives it."""
    markers = workdir / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    server = None
    if stuck == "env step":
        env["SLOW_ENV_MARKERS"] = str(markers)
        more, busy = [], lambda: len(os.listdir(markers)) >= 2
    else:
        server = ChatServer(hang_after=2)
        more, busy = openai_args(server.url, "policy.request_timeout_s=60"), lambda: server.held >= 2
    cmd = [sys.executable, "-c", "import sys, slow_env; from agent_sft.cli import main; sys.exit(main(sys.argv[1:]))",
           "collect", "--no-progress", "env.env_name=slow-test", "env.backend=process", "data.val_batch_size=2",
           "env.num_episodes=8", "output.flush_every_episodes=1", "output.dir=ds", *more]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # two episodes won and sealed, then both workers (or both requests) stuck
        wait_for(lambda: proc.poll() is not None or (busy() and list((workdir / "ds").glob("data/raw/*/*.arrow"))),
                60, "two episodes sealed, then both workers stuck")
        assert proc.poll() is None, proc.stderr.read()
        started = children(proc.pid)
        assert len(started) >= 2  # the env workers (and multiprocessing's resource tracker)
        t = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {time.monotonic() - t:.1f} s after SIGTERM") from None
        err = proc.stderr.read()
        assert proc.returncode == 143, err
        assert err.endswith("agent-sft collect: terminated (SIGTERM); the 2 episodes this run finished are sealed "
                            "in ds; run the same command again to play the rest\n"), err
        wait_for(lambda: not any(map(alive, started)) and not session_processes(proc.pid), 5,
                lambda: f"processes of the run still alive: {session_processes(proc.pid)}")
    finally:
        if proc.poll() is None or session_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if server is not None:
            server.close()
    rows = raw_rows(workdir / "ds")
    assert len(rows) == 2 and all(r["success"] for r in rows)


@ALFWORLD
@pytest.mark.alfworld
def test_two_collects_on_one_folder_keep_each_episode_once_and_say_what_was_played_twice(workdir):
    cmd = _collect_cmd("ds", "env.num_episodes=3", "data.val_batch_size=1")
    procs = [subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    rows = raw_rows(workdir / "ds")
    ids = [r["episode_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 3
    played = [int(re.search(r"Collected (\d+) episodes", o).group(1)) for o in outs]
    twice = [int(m.group(1)) if (m := re.search(r"(\d+) episodes were played twice: another collect is writing to "
                                                 r"this folder", o)) else 0 for o in outs]
    assert sum(twice) == sum(played) - len(rows), outs
    assert "use output.shard=i/n to split the work" in "".join(outs) or sum(twice) == 0
    held = [int(re.search(r"Folder now holds (\d+) episodes", o).group(1)) for o in outs]
    assert max(held) == 3

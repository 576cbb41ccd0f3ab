"""The `ray` env pool (`env.backend=ray`): one Ray actor per env, placed anywhere on the cluster.

Envs then spread over the cluster's CPUs independently of where the policy runs, as verl-agent runs its
env workers. Each slot is an actor holding one env; a request is an actor call with a deadline. An env
that raises, passes `env.step_timeout_s` or whose actor dies (its process, its node) gives a failed
`Reply`, and the slot gets a fresh actor (the old one is killed). Each actor reserves `scale.cpus_per_env`
CPUs. Joins the Ray this process is connected to (a collector actor's), else `$RAY_ADDRESS`, else starts
a local one, bound to 127.0.0.1 (`init_ray`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from collections.abc import Iterator
from typing import Any

from agent_sft.envs import EnvSpec
from agent_sft.errors import AgentSFTError
from agent_sft.rollout.pool_base import EnvHandle, SlotPool
from agent_sft.rollout.pools import Reply, build_env, run_command

# The address a Ray started here binds: its services then take no traffic from other machines.
LOOPBACK = "127.0.0.1"


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"env.backend=ray needs the 'ray' package ({e}); pip install 'agent-sft[ray]'") from e
    if not ray.is_initialized():
        init_ray(os.environ.get("RAY_ADDRESS") or None)
    return ray


def init_ray(address: str | None, **kwargs: Any) -> None:
    """Join the Ray cluster at `address`, or start a new local Ray bound to 127.0.0.1 when it is None.

    A new one even when `ray start` ran on this machine (Ray's own `ray.init()` would join that): a cluster
    is joined only by address (`auto` for the running one). A cluster for several machines is one started
    with `ray start` (its `--node-ip-address` chooses the address it binds). A Ray started here has no
    dashboard, and its workers import from this process's `sys.path`, so envs defined in the user's own
    modules build in the actors as they do in worker processes.

    Args:
        address: A cluster address as `ray.init` takes it (`auto`, `host:port`, `ray://host:port`), or None.
        **kwargs: Further `ray.init` arguments.

    Raises:
        RayLoopbackError: a Ray to start here, or one at a loopback address, and the installed Ray lacks the
            switch that keeps it on loopback.
    """
    import ray

    kwargs.setdefault("include_dashboard", False)
    if address is None:
        path = os.pathsep.join(p for p in sys.path if p)
        kwargs = {"_node_ip_address": LOOPBACK, "runtime_env": {"env_vars": {"PYTHONPATH": path}}, **kwargs}
        address = "local"
    with _loopback_kept(ray) if address == "local" or _is_loopback(address) else contextlib.nullcontext():
        ray.init(address=address, **kwargs)


class RayLoopbackError(AgentSFTError, RuntimeError):
    """The installed Ray cannot be kept on 127.0.0.1."""


def _is_loopback(address: str) -> bool:
    """Whether a cluster address (`host:port`, `ray://host:port`, `auto`) names this machine's loopback."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _loopback_kept(ray: Any) -> Iterator[None]:
    """Ray (on Linux) replaces a loopback address given to `ray.init`, the node's or the cluster's, with this
    machine's interface address before it binds or dials it; its switch for a local-only Ray (the constant
    behind `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read once at import) keeps it as given. The switch is
    private to Ray: a Ray without it is refused rather than left to bind the interface address."""
    try:
        from ray._private import ray_constants

        saved = ray_constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):
        raise RayLoopbackError(
            f"Ray {getattr(ray, '__version__', '?')} has no ray._private.ray_constants.ENABLE_RAY_CLUSTER, which "
            "keeps a Ray on this machine on 127.0.0.1; install a Ray that has it (ray 2.60 does), or start one "
            "with `ray start --head` and pass its address (scale.address or RAY_ADDRESS)") from None
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


class EnvActor:
    """One env inside a Ray actor."""

    def __init__(self, factory: Any, kwargs: dict) -> None:
        self.env, self.accepted = build_env(factory, kwargs)

    def ready(self) -> list[str]:
        return self.accepted

    def run(self, cmd: str, args: tuple) -> Any:
        return run_command(self.env, cmd, args)

    def close(self) -> None:
        self.env.close()


class _Actor(EnvHandle):
    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.built = actor.ready.remote()


class RayEnvPool(SlotPool):
    """`size` envs as Ray actors, addressed by slot: the `ray` backend of `EnvPool` (arguments: `SlotPool`,
    and `cpus_per_env`, the CPUs each env actor reserves)."""

    noun = "env actor"
    build_before_send = True  # `_poll` sees only requests: a slot's build is awaited first, under its own timeout

    def __init__(self, env: str | EnvSpec, size: int, env_kwargs: dict | None = None, timeout_s: float = 120.0,
                 start_timeout_s: float = 300.0, cpus_per_env: float = 1.0):
        self.ray = _ray()
        self.cpus_per_env = cpus_per_env
        self._remote = self.ray.remote(EnvActor)
        super().__init__(env, size, env_kwargs, timeout_s, start_timeout_s)

    def _start_hint(self) -> str:
        return f" (is there a free CPU on the cluster for it? scale.cpus_per_env={self.cpus_per_env:g})"

    def _launch(self, slot: int) -> _Actor:
        return _Actor(self._remote.options(num_cpus=self.cpus_per_env, max_restarts=0).remote(self.factory, self.kwargs))

    def _built(self, handle: _Actor, timeout_s: float) -> Reply | None:
        done, _ = self.ray.wait([handle.built], timeout=timeout_s)
        if not done:
            return None
        try:
            return Reply(True, self.ray.get(handle.built))
        except self.ray.exceptions.RayTaskError as e:
            return Reply(False, error=str(e.cause) if getattr(e, "cause", None) else str(e))
        except self.ray.exceptions.RayActorError as e:
            return Reply(False, error=f"the env actor died while starting: {e}")

    def _send(self, handle: _Actor, msg: tuple[str, tuple]) -> Any:
        cmd, args = msg
        return handle.actor.run.remote(cmd, args)

    def _poll(self, waiting: dict[int, tuple[_Actor, Any]], timeout_s: float) -> list[tuple[int, Reply, bool]]:
        refs = {ref: slot for slot, (_, ref) in waiting.items()}
        done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        return [(refs[ref], self._reply(ref), False) for ref in done]

    def _reply(self, ref: Any) -> Reply:
        ray = self.ray
        try:
            return Reply(True, ray.get(ref))
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            text = f"{type(cause).__name__}: {cause}\n{e}" if cause is not None else str(e)
            return Reply(False, error=text[-4000:])
        except ray.exceptions.RayActorError as e:
            return Reply(False, error=f"env actor died: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    def _kill(self, handle: _Actor) -> None:
        try:
            self.ray.kill(handle.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

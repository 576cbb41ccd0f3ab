"""The env server (`agent-sft serve-env`): one registered env served over HTTP, one env per session.

    agent-sft serve-env alfworld data_path=builtin --port 8100
    AGENT_SFT_ENV_TOKEN=secret agent-sft serve-env textworld --host 0.0.0.0

The wire format is `agent_sft.envs.http.protocol`; the `http` env is its client. `sessions` holds the
sessions (each env in its own worker process), `app` the FastAPI routes; `serve` builds both and runs
uvicorn. FastAPI and uvicorn (`pip install 'agent-sft[serve]'`) are imported only by `serve` and `app`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from agent_sft.envs import GENERIC_KWARGS, EnvSpec
from agent_sft.errors import ConfigError
from agent_sft.serve.sessions import ServeError, SessionManager

__all__ = ["ServeError", "SessionManager", "env_options", "is_loopback", "serve"]


def env_options(spec: EnvSpec, values: Mapping[str, Any] | Iterable[str] | None = None) -> Any:
    """The options instance of `spec` from `values`: a mapping or `key=value` strings, where a key is the
    option's name, `env.<option>` or `env.<env>.<option>` (as `agent-sft collect` takes them). String
    values are read as the option's type.

    Raises:
        ConfigError: an unknown key, a bad value, or a key naming another env.
    """
    from agent_sft.config.dotted import coerce

    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        pairs = {}
        for item in values:
            key, eq, value = str(item).partition("=")
            if not eq or not key:
                raise ConfigError(f"{item!r}: expected key=value (an option of {spec.name})")
            pairs[key] = value
        values = pairs
    fields = {f.name: f for f in spec.option_fields()}
    hints = typing.get_type_hints(spec.options) if spec.options is not None else {}
    names = (spec.name, *spec.aliases)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.removeprefix("env.")
        for n in sorted(names, key=len, reverse=True):
            if name.startswith(n + "."):
                name = name[len(n) + 1:]
                break
        if name not in fields:
            allowed = ", ".join(fields) or "none: it takes no options"
            generic = " (each session's client sets it)" if name in GENERIC_KWARGS else ""
            raise ConfigError(f"{key}: environment {spec.name!r} has no option {name!r}{generic} (its options: {allowed})")
        out[name] = coerce(f"env.{spec.name}.{name}", value, fields[name], hints[name])
    return spec.build_options(out)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port`, not yet listening (connections are refused until the env is ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    env_name: str,
    options: Any = None,
    host: str = "127.0.0.1",
    port: int = 8100,
    *,
    token: str | None = None,
    max_sessions: int = 64,
    max_steps: int = 50,
    idle_timeout_s: float = 600.0,
    step_timeout_s: float = 120.0,
    start_timeout_s: float = 300.0,
    exit_after_steps: int | None = None,
    log_level: str = "warning",
    protocol: str = "agent-sft",
    actions: str = "text",
    expert: str | None = None,
) -> None:
    """Serve env `env_name` until Ctrl-C or SIGTERM; then every session's env is closed.

    `options`: the env's options (an instance of its options dataclass, or what `env_options` takes).
    The address is taken first (one already in use fails at once); then one env is built to list the
    tasks (so bad options or missing data fail here), and only then are connections accepted.
    Prints `serving <env> on http://HOST:PORT (N tasks)` once it accepts connections (`port=0` picks a
    free port, and the line says which). Without a token on a host other than loopback, warns first.
    On a loopback host it answers requests addressed to a loopback name only, and without a token no
    request a web page of another site sent (`serve.guard`: 403, whatever the protocol).
    `max_steps`: the step budget of a session whose client names none.
    `protocol`: "agent-sft" (`envs.http.protocol`) or "openenv" (OpenEnv's routes, `serve.openenv_app`,
    whose /schema shows the text action or, with `actions="tools"`, the tool call). `expert`: with
    "openenv", the expert every session's env plans with (agent-sft's own clients name theirs per session).

    Raises:
        ConfigError: bad options or an address it cannot listen on.
        WorkerStartError: the env could not be built.
    """
    from agent_sft.envs import spec as find

    try:
        import uvicorn

        from agent_sft.serve.app import make_app
        from agent_sft.serve.guard import LocalGuard
        from agent_sft.serve.openenv_app import make_openenv_app
    except ImportError as e:
        raise ConfigError(f"serving an env needs fastapi and uvicorn ({e}): pip install 'agent-sft[serve]'") from None

    env = find(env_name)
    if options is None or isinstance(options, (Mapping, list, tuple)):
        options = env_options(env, options)
    if protocol not in ("agent-sft", "openenv"):
        raise ConfigError(f"protocol must be 'agent-sft' or 'openenv', got {protocol!r}")
    if actions not in ("text", "tools"):
        raise ConfigError(f"actions must be 'text' or 'tools', got {actions!r}")
    if max_sessions < 1:
        raise ConfigError(f"max_sessions must be at least 1, got {max_sessions}")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    if expert is not None:
        if protocol != "openenv":
            raise ConfigError("expert: a server of agent-sft's protocol takes each session's expert from its client; "
                              "serve one expert with --protocol openenv")
        if not env.expert_kwarg:
            raise ConfigError(f"expert: environment {env.name!r} has no expert")
        if env.experts and expert not in env.experts:
            raise ConfigError(f"expert: {expert!r} is not an expert of {env.name} (one of {', '.join(env.experts)})")
    if not token and not is_loopback(host):
        print(f"warning: serving {env.name} on {host} without a token: anyone who can reach this address can run "
              "the env; set a token (--token-env)", file=sys.stderr, flush=True)
    sock = _bind(host, port)
    try:
        manager = SessionManager(env, options, max_sessions=max_sessions, max_steps=max_steps,
                                 idle_timeout_s=idle_timeout_s,
                                 step_timeout_s=step_timeout_s, start_timeout_s=start_timeout_s,
                                 exit_after_steps=exit_after_steps)
    except BaseException:
        sock.close()
        raise
    try:
        sock.listen(2048)
        app = make_openenv_app(manager, token, actions, expert) if protocol == "openenv" else make_app(manager, token)
        def refused(why: str) -> dict[str, Any]:
            return {"detail": why} if protocol == "openenv" else ServeError("forbidden", why).body()

        app = LocalGuard(app, loopback=is_loopback(host), token=token, error_body=refused, host=host)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5,
                                lifespan="off")
        server = uvicorn.Server(config)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        spoken = ", OpenEnv protocol" if protocol == "openenv" else ""
        print(f"serving {env.name} on http://{shown}:{bound} ({len(manager.tasks)} tasks{spoken})", flush=True)
        server.run(sockets=[sock])
    finally:
        manager.close()
        sock.close()

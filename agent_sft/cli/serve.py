"""`agent-sft serve-env NAME [key=value ...]`: serve one environment over HTTP, one env per session.

    agent-sft serve-env alfworld                                  # built-in ALFWorld games on 127.0.0.1:8100
    agent-sft serve-env alfworld env.alfworld.data_path=builtin --port 8200
    AGENT_SFT_ENV_TOKEN=secret agent-sft serve-env textworld --host 0.0.0.0
    agent-sft serve-env alfworld --protocol openenv               # for OpenEnv clients and TRL
    agent-sft serve-env alfworld --protocol openenv --expert planner   # its info carries the expert's plan

The env's options come after its name, as `agent-sft collect` takes them (`option=value`,
`env.<option>=value` or `env.<name>.<option>=value`); each session's client sets the seed, step budget,
task types and expert. The `http` env is its client (`agent-sft envs http`). With `--protocol openenv`
it speaks OpenEnv's protocol instead (/ws, /schema, /mcp, the Task API), for OpenEnv's own clients.
Every session's env runs in its own process: one that crashes or hangs fails only its session.
With a token (read from the variable --token-env names), requests need `Authorization: Bearer <token>`.
Ctrl-C or SIGTERM closes every session's env and exits.
"""

from __future__ import annotations

import argparse
import os

from agent_sft.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("env", metavar="NAME", help="the environment to serve (see `agent-sft envs`)")
    parser.add_argument("options", nargs="*", metavar="key=value", help="the env's options, e.g. data_path=builtin")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--protocol", default="agent-sft", choices=["agent-sft", "openenv"],
                        help="the wire protocol: agent-sft's (the `http` env's) or OpenEnv's (default: %(default)s)")
    parser.add_argument("--actions", default=None, choices=["text", "tools"],
                        help="with --protocol openenv: the action /schema shows, a text command or a call of the "
                             "env's tools (both are played either way; default: text)")
    parser.add_argument("--expert", default=None, metavar="NAME",
                        help="with --protocol openenv: the expert every session's env plans with (its info then "
                             "carries expert_plan, which agent-sft's expert policy replays); default: none")
    parser.add_argument("--max-sessions", type=int, default=64,
                        help="sessions open at once; a session asked for past it gets 503 busy, or with --protocol "
                             "openenv a /ws connection gets CAPACITY_REACHED and is closed (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=50,
                        help="the step budget of a session whose client names none (agent-sft's clients send "
                             "env.max_steps; with --protocol openenv a reset may send max_steps) (default: %(default)s)")
    parser.add_argument("--idle-timeout-s", type=float, default=600.0,
                        help="close a session unused this long; a client may ask for a shorter lease, which it "
                             "renews (default: %(default)s)")
    parser.add_argument("--step-timeout-s", type=float, default=120.0,
                        help="a reset or step taking longer fails and its env is replaced (default: %(default)s)")
    parser.add_argument("--start-timeout-s", type=float, default=300.0,
                        help="deadline for a session's env to be built (default: %(default)s)")
    parser.add_argument("--token-env", default="AGENT_SFT_ENV_TOKEN", metavar="VAR",
                        help="environment variable holding the token requests must carry, if set (default: %(default)s)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default: %(default)s)")
    # For tests: exit abruptly (os._exit) right after answering the N-th step in total.
    parser.add_argument("--exit-after-steps", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from agent_sft.envs import UnknownEnvError, spec
    from agent_sft.serve import env_options, serve

    if args.actions is not None and args.protocol != "openenv":
        raise CLIError(f"--actions {args.actions}: only with --protocol openenv (it picks the action OpenEnv's "
                       "/schema shows)")
    if args.exit_after_steps is not None and args.protocol != "agent-sft":
        raise CLIError("--exit-after-steps: only with --protocol agent-sft")
    try:
        env = spec(args.env)
    except UnknownEnvError as err:
        raise CLIError(str(err)) from None
    missing = env.missing_packages()
    if missing:
        raise CLIError(f"environment {env.name!r} needs {', '.join(missing)}: {env.install_hint()}")
    for flag, value in (("--max-sessions", args.max_sessions), ("--idle-timeout-s", args.idle_timeout_s),
                        ("--step-timeout-s", args.step_timeout_s), ("--start-timeout-s", args.start_timeout_s)):
        if value <= 0:
            raise CLIError(f"{flag} must be positive, got {value:g}")
    if args.exit_after_steps is not None and args.exit_after_steps < 1:
        raise CLIError(f"--exit-after-steps must be at least 1, got {args.exit_after_steps}")
    options = env_options(env, args.options)
    token = os.environ.get(args.token_env) or None
    try:
        serve(env.name, options, args.host, args.port, token=token, max_sessions=args.max_sessions,
              max_steps=args.max_steps, idle_timeout_s=args.idle_timeout_s, step_timeout_s=args.step_timeout_s,
              start_timeout_s=args.start_timeout_s, exit_after_steps=args.exit_after_steps,
              log_level=args.log_level, protocol=args.protocol, actions=args.actions or "text", expert=args.expert)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (the CLI's `Terminated`)
        raise type(e)("every session's env was closed") from None
    return 0


__all__ = ["add_arguments", "run"]

"""`agent-sft` command line: one module per group of subcommands, imported only when used."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator

from agent_sft.procs import exit_now as _exit_now

# subcommand -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args)`.
COMMANDS = {
    "collect": ("agent_sft.cli.collect", "Play episodes with a policy and write a dataset folder."),
    "build": ("agent_sft.cli.data", "Re-derive the sft config from raw with new filters or style."),
    "export": ("agent_sft.cli.data", "Export a dataset folder (verl Parquet/CSV/JSON, JSONL, ATIF or ShareGPT)."),
    "import": ("agent_sft.cli.imports", "Import trajectories written by other tools (ATIF) into a dataset folder."),
    "merge": ("agent_sft.cli.data", "Merge dataset folders collected on several machines."),
    "info": ("agent_sft.cli.data", "Counts, success by task type, lengths, drops by filter."),
    "compact": ("agent_sft.cli.data", "Compact small shards of a folder into few large ones."),
    "repair": ("agent_sft.cli.data", "Verify every shard; re-derive damaged sft, move damaged raw shards aside."),
    "judge": ("agent_sft.cli.judge", "Score a folder's episodes with an LLM judge (pointwise or listwise)."),
    "augment": ("agent_sft.cli.augment", "Have a model write the reasoning behind each expert step (actions unchanged)."),
    "view": ("agent_sft.cli.view", "Write a viewer of a dataset folder (or pushed repo): episodes, steps, prompts."),
    "push": ("agent_sft.cli.push", "Upload a dataset folder to the Hugging Face Hub."),
    "envs": ("agent_sft.cli.envs", "List the environments: options, task types, experts, installed or not."),
    "serve-env": ("agent_sft.cli.serve", "Serve an environment over HTTP, one env per session (for the `http` env)."),
    "verify": ("agent_sft.cli.verify", "Replay each episode's actions in its env and check that what was recorded comes back."),
    "tiny-model": ("agent_sft.cli.data", "Build a tiny random chat model offline (for tests and dry runs)."),
}


class CLIError(Exception):
    """An error the user can fix; printed without a traceback. `exit_code`: 2 for a bad config or usage, 3 for
    a run that failed for good (`agent_sft.errors.RunFailedError`)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM (`docker stop`, a scheduler ending the job), raised in the main thread as Ctrl-C is.

    Being a KeyboardInterrupt, it takes the same way out: buffered episodes are sealed, env workers are
    stopped. A command may re-raise it with a message saying what was kept.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs once, whatever else arrives
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (the previous handler is restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse(parser: argparse.ArgumentParser, subparsers: dict[str, argparse.ArgumentParser], argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; a command's options and positionals may come in any order (`key=value --flag key=value`)."""
    i = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if i is None or i > 0 or argv[0] not in subparsers:
        return parser.parse_args(argv)  # top-level help, or an unknown command: argparse says so
    try:
        args = subparsers[argv[0]].parse_intermixed_args(argv[1:])
    except TypeError:  # a parser intermixed parsing cannot handle (e.g. a REMAINDER argument)
        args = subparsers[argv[0]].parse_args(argv[1:])
    args.command = argv[0]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agent-sft",
        description="Collect agent trajectories in text environments as Hugging Face datasets for SFT and RL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else list(argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    subparsers = {}
    for name, (mod, help) in COMMANDS.items():
        p = subparsers[name] = sub.add_parser(name, help=help, description=help)
        if name == wanted:  # import only the module of the command actually run
            importlib.import_module(mod).add_arguments(p, name)
    args = _parse(parser, subparsers, argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    from agent_sft.errors import AgentSFTError, RunFailedError

    try:
        with _sigterm_raises():
            return module.run(args) or 0
    except (CLIError, AgentSFTError) as e:
        print(f"agent-sft {args.command}: error: {e}", file=sys.stderr)
        return 3 if isinstance(e, RunFailedError) else getattr(e, "exit_code", 2)
    except Terminated as e:
        print(f"agent-sft {args.command}: terminated (SIGTERM); {e or 'what was written so far is kept'}", file=sys.stderr)
        _exit_now(128 + signal.SIGTERM)
    except KeyboardInterrupt as e:
        print(f"agent-sft {args.command}: interrupted; {e or 'what was written so far is kept'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`agent-sft augment DIR --name NAME`: a model writes the reasoning behind each recorded step (the expert's, by
default), kept under data/rationale/NAME/; the actions never change.

    agent-sft augment agent_sft_data --name qwen7b --policy.type openai \\
        --policy.base_url http://127.0.0.1:8000/v1 --policy.model Qwen/Qwen2.5-7B-Instruct
    agent-sft build agent_sft_data --name sft_thinking --reasoning qwen7b      # a config with the reasoning

The model is given with the `policy.*` keys `agent-sft collect` takes, as `key=value` or as `--policy.<key>
VALUE`. For each step it gets the step's prompt and the recorded action, and answers a thought then the action
in the env's format; an answer with another action (after normalisation) is asked again with a new seed, up to
--max-attempts answers, then the step is left out (the build keeps its recorded answer). `--template FILE`
replaces the hint (str.format placeholders: see agent_sft.augment.template). Running the same command again
asks only about what is missing. A server that fails for good stops the run with exit code 3; the rationales
sealed so far are kept. Another model, template or seed is another set: give it another --name.
"""

from __future__ import annotations

import argparse
import time

from agent_sft.cli import CLIError
from agent_sft.cli.model_flags import add_policy_arguments
from agent_sft.cli.model_flags import policy_config as model_policy_config
from agent_sft.config import PolicyConfig

PROGRESS_S = 10.0


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    from agent_sft.augment.run import EPISODES

    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("overrides", nargs="*", metavar="policy.key=value", help="the model, e.g. policy.type=openai")
    parser.add_argument("--name", required=True,
                        help="the rationales' name ([a-z0-9_-]+): they go to data/rationale/NAME/")
    parser.add_argument("--template", metavar="FILE", help="a hint template replacing the built-in one")
    parser.add_argument("--max-attempts", type=int, default=3, metavar="N",
                        help="answers asked per step at most; a step none matches is left out")
    parser.add_argument("--episodes", default="expert", choices=EPISODES,
                        help="whose steps: the expert's episodes, successful ones of any policy, or all "
                             "(never those ended in an error; valid steps only)")
    parser.add_argument("--limit", type=int, metavar="N", help="augment the steps of at most N episodes in this run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (recorded with each rationale)")
    parser.add_argument("--flush-every", type=int, default=32, metavar="N",
                        help="seal the rationales every N steps (a kill loses at most those)")
    add_policy_arguments(parser, "the model")


def policy_config(a: argparse.Namespace) -> PolicyConfig:
    """The model's `PolicyConfig` (`cli.model_flags.policy_config`)."""
    return model_policy_config(a, "augment", "the model", "write reasoning")


def run(a: argparse.Namespace) -> int:
    from agent_sft.augment import augment_folder
    from agent_sft.dataset.layout import require_dataset
    from agent_sft.dataset.rationales import check_name
    from agent_sft.errors import RunFailedError

    check_name(a.name)
    cfg = policy_config(a)
    require_dataset(a.dir)
    print(f"Augmenting {a.dir} as {a.name!r} ({a.episodes} episodes, policy {cfg.type} {cfg.model}).", flush=True)
    sealed, last = [0], [time.monotonic()]

    def progress(n: int) -> None:  # a line at most every PROGRESS_S
        sealed[0] += n
        if time.monotonic() - last[0] >= PROGRESS_S:
            last[0] = time.monotonic()
            print(f"  {sealed[0]} steps sealed", flush=True)

    try:
        r = augment_folder(a.dir, a.name, cfg, template=a.template, seed=a.seed, limit=a.limit,
                           max_attempts=a.max_attempts, episodes=a.episodes, flush_every=a.flush_every,
                           on_rationales=progress)
    except RunFailedError as e:
        raise CLIError(f"{e}\nThe rationales sealed so far are kept; fix or restart the model's server, then run the "
                       "same command again: it asks only about what is missing.", 3) from None
    except ImportError as e:
        raise CLIError(str(e)) from None
    from agent_sft.dataset.maintain import refresh_views

    refresh_views(a.dir)  # the new shards checksummed, and the named builds reading these rationales show them
    builds = _builds_using(a.dir, a.name)
    line = (f"augment {a.name}: {r.augmented} steps given reasoning in {r.episodes} episodes, {r.regenerated} answers "
            f"asked again (another action or no reasoning), {r.left_out} steps left out (no answer matched in "
            f"{a.max_attempts})")
    if r.failed:
        line += f", {r.failed} failed (their requests failed; running again retries them)"
    line += f"; {r.done_before} steps done before, {r.not_wanted} episodes not augmented (--episodes {a.episodes})"
    if r.left:
        line += f", {r.left} episodes left for a later run (--limit)"
    print(f"{line}.\nRationales in {a.dir}/data/rationale/{a.name}/; "
          + (f"rebuilt {', '.join(builds)}." if builds else
             f"use them with `agent-sft build {a.dir} --name <config> --reasoning {a.name}`."))
    return 0


def _builds_using(folder: str, name: str) -> list[str]:
    """The folder's named builds whose reasoning is `name`."""
    from agent_sft.dataset.curate import named_builds
    from agent_sft.dataset.layout import read_info

    return [n for n, b in named_builds(read_info(folder)).items() if b.reasoning == name]

"""`agent-sft judge DIR --name NAME`: score a folder's episodes with an LLM judge, kept under data/judge/NAME/.

    agent-sft judge agent_sft_data --name qwen7b --policy.type openai \\
        --policy.base_url http://127.0.0.1:8000/v1 --policy.model Qwen/Qwen2.5-7B-Instruct
    agent-sft judge agent_sft_data --name rank --mode listwise policy.model=/models/judge   # vLLM, in process
    agent-sft judge agent_sft_data --name strict --template rubric.txt policy.type=openai ...

The judge's model is given with the `policy.*` keys `agent-sft collect` takes, as `key=value` or as
`--policy.<key> VALUE`. `pointwise` scores each episode against a rubric; `listwise` scores the episodes of
a task against each other. `--template FILE` replaces the rubric (str.format placeholders: see
agent_sft.judge.prompts). Scores are in [0, 1]. Running the same command again judges only what is
missing: episodes added since, and those whose answer could not be read. A judge server that fails for
good stops the run with exit code 3; the verdicts sealed so far are kept. Another model or template is
another judge: give it another --name.
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
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("overrides", nargs="*", metavar="policy.key=value", help="the judge's model, e.g. policy.type=openai")
    parser.add_argument("--name", required=True, help="the judge's name ([a-z0-9_-]+): its scores are data/judge/NAME/")
    parser.add_argument("--mode", default="pointwise", choices=["pointwise", "listwise"],
                        help="pointwise: each episode against a rubric; listwise: a task's episodes against each other")
    parser.add_argument("--template", metavar="FILE", help="a prompt template replacing the built-in rubric")
    parser.add_argument("--limit", type=int, metavar="N", help="judge at most N episodes in this run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judge's sampling (recorded with each score)")
    parser.add_argument("--flush-every", type=int, default=32, metavar="N",
                        help="seal the verdicts every N episodes (a kill loses at most those)")
    parser.add_argument("--group-size", type=int, default=8, metavar="N", help="listwise: episodes compared at once at most")
    add_policy_arguments(parser, "the judge's model")


def policy_config(a: argparse.Namespace) -> PolicyConfig:
    """The model's `PolicyConfig` (`cli.model_flags.policy_config`)."""
    return model_policy_config(a, "judge", "the judge's model", "judge")


def run(a: argparse.Namespace) -> int:
    from agent_sft.dataset.judged import check_name
    from agent_sft.dataset.layout import require_dataset
    from agent_sft.errors import RunFailedError
    from agent_sft.judge import judge_folder

    check_name(a.name)
    cfg = policy_config(a)
    require_dataset(a.dir)
    print(f"Judging {a.dir} as {a.name!r} ({a.mode}, policy {cfg.type} {cfg.model}).", flush=True)
    sealed, last = [0], [time.monotonic()]

    def progress(n: int) -> None:  # a line at most every PROGRESS_S
        sealed[0] += n
        if time.monotonic() - last[0] >= PROGRESS_S:
            last[0] = time.monotonic()
            print(f"  {sealed[0]} verdicts sealed", flush=True)

    try:
        r = judge_folder(a.dir, a.name, cfg, mode=a.mode, template=a.template, seed=a.seed, limit=a.limit,
                         flush_every=a.flush_every, group_size=a.group_size, on_verdicts=progress)
    except RunFailedError as e:
        raise CLIError(f"{e}\nThe verdicts sealed so far are kept; fix or restart the judge's server, then run the same "
                       "command again: it judges only what is missing.", 3) from None
    except ImportError as e:
        raise CLIError(str(e)) from None
    from agent_sft.dataset.maintain import refresh_views

    refresh_views(a.dir)  # the scores config shows the new verdicts (column `judge`)
    line = f"judge {a.name}: {r.judged} episodes scored"
    if r.failed:
        line += f", {r.failed} failed (no score could be read; running again retries them)"
    line += f", {r.skipped} scored before, {r.errors} error episodes left aside"
    if r.left:
        line += f", {r.left} left for a later run (--limit)"
    print(f"{line}.\nVerdicts in {a.dir}/data/judge/{a.name}/; scores as judge.{a.name} in the `scores` config "
          f"(filters.scores, filters.select_by).")
    return 0

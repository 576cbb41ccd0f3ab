"""The episode record: `Step`, `Episode`, `Message`, and their Arrow schemas.

An `Episode` is what the rollout loop produces and what the writer stores as one row of the `raw`
config. Everything here is plain data; turning episodes into rows lives in `agent_sft.dataset.formats`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, NotRequired, TypedDict

import pyarrow as pa

SCHEMA_VERSION = 1
"""Version of the on-disk row schema. Folders written with another version are refused."""

SPLITS = ("train", "validation")
CONFIGS = ("raw", "sft")

# How an episode ended.
END_SUCCESS = "success"
END_FAILURE = "failure"  # the env ended the episode without a win
END_STEP_LIMIT = "step_limit"
END_CONTEXT = "context_truncated"  # the prompt no longer fit the model's context
END_ERROR = "error"  # the env or the policy raised, hung, or the server failed
END_UNJUDGED = "unjudged"  # imported from a trajectory that does not say whether it succeeded (success false)
END_REASONS = (END_SUCCESS, END_FAILURE, END_STEP_LIMIT, END_CONTEXT, END_ERROR, END_UNJUDGED)


class Message(TypedDict):
    role: str
    content: str
    # With prompt.actions=tools (the `tools` addition), as chat templates have them:
    tool_calls: NotRequired[list[dict] | None]  # an assistant's calls: [{id, type, function: {name, arguments}}]
    tool_call_id: NotRequired[str | None]  # a `tool` message: the call it answers
    reasoning_content: NotRequired[str | None]  # an assistant's reasoning, beside its call


@dataclass
class Step:
    """One turn: what the policy saw, what it said, and what the env made of it.

    The prompt of a step is not copied: it is `messages[prompt_start:prompt_end]` of its episode,
    preceded by the episode's system message (when there is one and `prompt_start > 0`). With a growing
    chat the window simply starts at the first user turn, so storage stays linear in episode length.
    """

    index: int
    observation: str  # the env observation the policy acted on
    prompt_start: int
    prompt_end: int
    response: str  # raw model (or expert) output
    action: str  # parsed action sent to the env ("" when the response did not parse)
    valid: bool  # the response parsed and its action was admissible
    invalid_reason: str = ""  # why not, e.g. "missing <action> tag", "not admissible: 'fly'"
    reward: float = 0.0
    done: bool = False
    info: str = "{}"  # JSON of the env info worth keeping (admissible actions, won, ...)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    latency_s: float = 0.0  # policy time attributed to this step
    # With policy.record_tokens (the `tokens` addition): what the engine was given and produced, token for token.
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # the sampled token's logprob at each completion position
    top_logprobs: list[list[dict]] | None = None  # with policy.logprobs=N: [{token_id, logprob}] by rank per position


@dataclass
class PolicyInfo:
    kind: str  # "expert", "vllm", "hf", "openai", ...
    model: str = ""  # model name or path as given (never a local absolute path in rows)
    sampling: str = "{}"  # JSON of the sampling parameters


@dataclass
class Episode:
    episode_id: str
    env: str
    task_id: str  # portable id, relative to the game root
    task_type: str
    goal: str
    seed: int  # the episode's own seed, derived from run seed, task and sample index
    run_seed: int
    sample_index: int
    split: str  # "train" or "validation", by a stable hash of task_id
    game_split: str  # where the game came from: "train", "valid_seen", "builtin", ...
    policy: PolicyInfo
    prompt_style: str  # "window" (each prompt carries its own history) or "chat"
    messages: list[Message] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    success: bool = False
    end_reason: str = END_FAILURE
    error: str = ""
    started_at: float = 0.0  # unix time
    duration_s: float = 0.0
    versions: str = "{}"  # JSON {package: version}
    extra: str = "{}"  # JSON of env-specific task metadata
    tools: str | None = None  # prompt.actions=tools: JSON of the tool schemas offered (None: text actions)
    # With policy.record_tokens: every model turn captured with its prompt and completion ids (None: not recorded).
    tokens_complete: bool | None = None
    # The `task_hash` addition: the env's content hash of the task at reset (None: not recorded, or the env gave none).
    task_hash: str | None = None

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.steps]

    @property
    def final_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def episode_length(self) -> int:
        return len(self.steps)

    def step_prompt(self, step: Step) -> list[Message]:
        """The exact messages the policy saw at `step`."""
        return prompt_of(self.messages, step.prompt_start, step.prompt_end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_of(messages: list, start: int, end: int) -> list:
    """`messages[start:end]`, preceded by the system message when the window skips it."""
    head = [messages[0]] if start > 0 and messages and messages[0]["role"] == "system" else []
    return head + list(messages[start:end])


_THINK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)


def split_think(text: str) -> tuple[str | None, str]:
    """(the text of a response's `<think>` blocks, joined by newlines, or None when it has none; the response
    without them, stripped). Tags match in any case, as the action parser reads them; a response without a
    block comes back unchanged."""
    text = text or ""
    found = [t.strip() for t in _THINK.findall(text)]
    if not found:
        return None, text
    return "\n".join(t for t in found if t), _THINK.sub("", text).strip()


def episode_id(env: str, task_id: str, run_seed: int, sample_index: int) -> str:
    """Deterministic id of an episode: a function of what it plays, never of when or where."""
    key = f"{env}\x1f{task_id}\x1f{run_seed}\x1f{sample_index}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def episode_seed(run_seed: int, task_id: str, sample_index: int) -> int:
    """The seed an episode's env and sampling use, derived like its id (fits in int32 for vLLM)."""
    key = f"{run_seed}\x1f{task_id}\x1f{sample_index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def turn_seed(episode_seed: int, turn: int) -> int:
    """The sampling seed of one turn of one episode (fits in int32)."""
    digest = hashlib.sha256(f"{episode_seed}\x1f{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def task_split(task_id: str, val_fraction: float) -> str:
    """`validation` for a stable `val_fraction` of tasks, chosen by a hash of the portable task id."""
    h = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") / 2**64
    return "validation" if h < val_fraction else "train"


def past_stop(sample_index: int, successes_before: int, until_success: int, budget: int) -> bool:
    """Whether sample `sample_index` of a task sampled until success lies past the task's stop.

    A task's result is its samples 0..j, where j is the first index at which `until_success` of them have
    succeeded, counting in index order, or `budget - 1`. Given `successes_before`, the successes known
    among the task's samples below `sample_index` (a sample not played yet, or ended in an error, is not
    one), the sample is past the stop when that count already reaches `until_success` or it is beyond the
    budget. A success found later below it can only move the stop earlier, so what this says is past stays
    past.
    """
    return sample_index >= budget or successes_before >= until_success


# --- Arrow schemas -------------------------------------------------------------------------------

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)

STEP_TYPE = pa.struct(
    [
        ("index", pa.int32()),
        ("observation", pa.string()),
        ("prompt_start", pa.int32()),
        ("prompt_end", pa.int32()),
        ("response", pa.string()),
        ("action", pa.string()),
        ("valid", pa.bool_()),
        ("invalid_reason", pa.string()),
        ("reward", pa.float64()),
        ("done", pa.bool_()),
        ("info", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
    ]
)

POLICY_TYPE = pa.struct([("kind", pa.string()), ("model", pa.string()), ("sampling", pa.string())])

RAW_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("env", pa.string()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("goal", pa.string()),
        ("seed", pa.int64()),
        ("run_seed", pa.int64()),
        ("sample_index", pa.int32()),
        ("split", pa.string()),
        ("game_split", pa.string()),
        ("policy", POLICY_TYPE),
        ("prompt_style", pa.string()),
        ("messages", MESSAGES_TYPE),
        ("steps", pa.list_(STEP_TYPE)),
        ("success", pa.bool_()),
        ("rewards", pa.list_(pa.float64())),
        ("final_reward", pa.float64()),
        ("episode_length", pa.int32()),
        ("num_invalid", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("end_reason", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.float64()),
        ("duration_s", pa.float64()),
        ("versions", pa.string()),
        ("extra", pa.string()),
    ]
)

SFT_SCHEMA = pa.schema(
    [
        ("messages", MESSAGES_TYPE),
        ("episode_id", pa.string()),
        ("step", pa.int32()),  # the step this row trains; null for a whole-episode (chat) row
        ("env", pa.string()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("goal", pa.string()),
        ("success", pa.bool_()),
        ("reward", pa.float64()),  # the step's reward (whole-episode rows: the episode return)
        ("final_reward", pa.float64()),
        ("episode_length", pa.int32()),
        ("valid", pa.bool_()),  # every trained assistant turn parsed and was admissible
        ("sample_index", pa.int32()),
        ("seed", pa.int64()),
    ]
)

SCORES_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("env", pa.string()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("sample_index", pa.int32()),
        ("split", pa.string()),
        ("success", pa.bool_()),
        ("end_reason", pa.string()),
        ("episode_length", pa.int32()),
        ("invalid_rate", pa.float64()),  # steps whose response did not parse or whose action was not admissible
        ("format_rate", pa.float64()),  # responses in the required format (tags present), whatever the env said
        ("repeat_rate", pa.float64()),  # steps repeating an action played earlier in the episode
        ("loop_rate", pa.float64()),  # steps repeating an (observation, action) pair seen earlier: going round
        ("reasoning_words", pa.float64()),  # words inside <think> per step
        ("plan_length", pa.int32()),  # the env expert's plan length at reset (null: no expert)
        ("length_ratio", pa.float64()),  # steps / the task's reference length (plan, else its shortest success)
        ("judge", pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())]))),
        # the builds (sft, named builds) that leave the episode out, and the filter or stage that does
        ("dropped_by", pa.list_(pa.struct([("config", pa.string()), ("reason", pa.string())]))),
    ]
)
"""The `scores` config: one row per episode, keyed by `episode_id` (`agent_sft.dataset.scores`)."""

DPO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES_TYPE),
        ("chosen", MESSAGES_TYPE),
        ("rejected", MESSAGES_TYPE),
        ("pair", pa.string()),  # `episode`: a success against a failure; `step`: two answers to one prompt
        ("env", pa.string()),
        ("task_id", pa.string()),
        ("task_type", pa.string()),
        ("step", pa.int32()),  # the step where they diverge (null: the first turn of an episode pair)
        ("chosen_episode_id", pa.string()),
        ("rejected_episode_id", pa.string()),
        ("chosen_reward", pa.float64()),
        ("rejected_reward", pa.float64()),
    ]
)
"""The `dpo` config: TRL's conversational preference format (`prompt`, `chosen`, `rejected`) plus metadata."""

JUDGE_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("judge", pa.string()),  # the judge's name: another model or template is another name
        ("mode", pa.string()),  # `pointwise` or `listwise`
        ("score", pa.float64()),  # null when the judge's answer could not be read (`error` says why)
        ("model", pa.string()),
        ("template_sha256", pa.string()),
        ("prompt", pa.string()),  # the rendered prompt, JSON messages
        ("output", pa.string()),  # the judge's raw answer
        ("seed", pa.int64()),
        ("error", pa.string()),
        ("judged_at", pa.float64()),
    ]
)
"""Judge verdicts, kept like `raw` under data/judge/<name>/ (they cannot be derived again)."""

RATIONALE_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("step", pa.int32()),  # the step's index in its episode
        ("rationale", pa.string()),  # the reasoning written for the recorded action; null when left out
        ("output", pa.string()),  # the model's raw answer (its last attempt)
        ("action", pa.string()),  # the action read from that answer ("" when none could be read)
        ("attempts", pa.int32()),  # answers asked for this step
        ("status", pa.string()),  # `ok`, `left_out` (no answer matched the recorded action) or `failed` (retried)
        ("error", pa.string()),
        ("model", pa.string()),
        ("template_sha256", pa.string()),
        ("seed", pa.int64()),  # the run's seed; each attempt's sampling seed is derived from it
        ("augmented_at", pa.float64()),
    ]
)
"""Rationales for recorded steps (`agent-sft augment`), kept like `raw` under data/rationale/<name>/."""

SCHEMAS = {"raw": RAW_SCHEMA, "sft": SFT_SCHEMA, "scores": SCORES_SCHEMA, "dpo": DPO_SCHEMA, "judge": JUDGE_SCHEMA,
           "rationale": RATIONALE_SCHEMA}

# --- schema additions ----------------------------------------------------------------------------
# A setting that changes what a shard holds adds columns (or struct fields) to the version-1 schemas above,
# appended after theirs, and only in the folders collected with it: a folder without an addition is written and
# read exactly as before. A folder lists its additions in meta/info.json (`schema_additions`) and every shard in
# its metadata (`additions`); an addition this version does not know is refused like another schema version.

TOKEN_TYPE = pa.struct([("token_id", pa.int32()), ("logprob", pa.float32())])

TOOL_CALL_TYPE = pa.struct([("id", pa.string()), ("type", pa.string()),
                            ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])

ADDITIONS: dict[str, dict[str, list[tuple[str, pa.DataType]]]] = {
    # policy.record_tokens: what the engine produced, token for token
    "tokens": {
        "step": [("prompt_token_ids", pa.list_(pa.int32())), ("completion_token_ids", pa.list_(pa.int32())),
                 ("logprobs", pa.list_(pa.float32())), ("top_logprobs", pa.list_(pa.list_(TOKEN_TYPE)))],
        "raw": [("tokens_complete", pa.bool_())],
    },
    # prompt.actions=tools: actions as function calls, with the tools offered (a JSON list of schemas)
    "tools": {
        "message": [("tool_calls", pa.list_(TOOL_CALL_TYPE)), ("tool_call_id", pa.string()),
                    ("reasoning_content", pa.string())],
        "raw": [("tools", pa.string())],
        "sft": [("tools", pa.string())],
    },
    # every collection: a content hash of what defines the episode's task (its game files, its goal), as the env
    # computed it at reset (`info["task_hash"]`), so that `agent-sft verify` tells a changed task file apart
    "task_hash": {
        "raw": [("task_hash", pa.string())],
    },
}
"""addition -> part (`message`, `step`, `raw`, `sft`) -> the fields it appends there."""


def check_additions(additions: Any) -> tuple[str, ...]:
    """`additions` as a sorted tuple of known names.

    Raises:
        ValueError: one this version does not know (a folder written by a newer agent-sft).
    """
    out = tuple(sorted(set(additions or ())))
    unknown = [a for a in out if a not in ADDITIONS]
    if unknown:
        raise ValueError(f"schema additions {', '.join(unknown)} are not known to this agent-sft (it knows "
                         f"{', '.join(ADDITIONS)})")
    return out


def _fields(additions: tuple[str, ...], part: str) -> list[tuple[str, pa.DataType]]:
    return [f for a in additions for f in ADDITIONS[a].get(part, [])]


def schema(config: str, additions: Any = ()) -> pa.Schema:
    """The Arrow schema of `config` (`raw`, `sft`, ...) in a folder with `additions` (none: `SCHEMAS[config]`)."""
    adds = check_additions(additions)
    base = SCHEMAS[config]
    if not adds or config not in ("raw", "sft"):
        return base
    message = pa.list_(pa.struct(list(MESSAGE_TYPE) + [pa.field(n, t) for n, t in _fields(adds, "message")]))
    step = pa.list_(pa.struct(list(STEP_TYPE) + [pa.field(n, t) for n, t in _fields(adds, "step")]))
    retyped = {"messages": message, "steps": step}
    fields = [pa.field(f.name, retyped.get(f.name, f.type)) if f.name in retyped else f for f in base]
    return pa.schema(fields + [pa.field(n, t) for n, t in _fields(adds, config)])

RESERVED_CONFIGS = ("raw", "sft", "dpo", "scores", "judge", "rationale")
"""Config names a named build cannot take."""

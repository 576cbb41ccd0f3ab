"""`EnvSpec`: everything the rest of agent-sft needs to know about an environment, in one place.

A spec names the env and the class (or factory) that builds it, and says what the generic code would
otherwise have to special-case: the env's own options (`env.<name>.*` keys, checked when the config is
read), which of them decide the episodes' content (the folder's fingerprint), the packages whose
versions are recorded, which game splits are evaluation games, the info keys kept once per episode,
how its expert is asked for and where its prompt templates are. The words people read about it (the
dataset card, `agent-sft envs`, the env server's description) are its `EnvCard`.

    @dataclass
    class MazeOptions(EnvOptions):
        size: int = option(5, "Side of the maze.")

    register("maze", "my_pkg.maze:MazeEnv", options=MazeOptions, packages=("my-pkg",),
             card=EnvCard(title="Maze", description="Find the way out."))
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from agent_sft.errors import ConfigError
from agent_sft.version import installed_versions

GENERIC_KWARGS = ("seed", "max_steps", "task_types", "expert")
"""What every env factory is offered besides its own options (each only when its signature takes it):
`seed` (env.seed, the run seed), `max_steps` (env.max_steps), `task_types` (env.task_types, None for
all; only to an env whose spec says `filters_tasks`), and the expert to plan with (policy.expert when
policy.type=expert, else None), passed under the spec's `expert_kwarg`."""

FALLBACK_EXPERT = "planner"
"""The expert asked of an env that lists no experts (it judges the name itself), when none is named."""

EPISODE_KEYS = (
    "task_id",
    "task_type",
    "goal",
    "game_split",
    "step",
    "admissible_actions",
    "action_patterns",
    "expert_plan",
    "task_hash",
)
"""Info keys of the `TextEnv` protocol stored once per episode (or recomputed), never in a step's info JSON."""


def option(default: Any, help: str, choices: tuple | None = None, fingerprint: bool = True) -> Any:
    """A field of an env's options dataclass: its default, help text, allowed values, and whether it
    decides the episodes' content (then it is part of the folder's fingerprint: a resume with another
    value is refused)."""
    meta = {"help": help, "fingerprint": fingerprint}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


class OptionError(ConfigError):
    """A bad env option value, raised from an options dataclass's `__post_init__`.

    Args:
        name: the option (field) name; the config reports it as `env.<env>.<name>`.
        message: what is wrong and what would be right.
    """

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass
class EnvOptions:
    """Base of an env's options dataclass (fields made with `option`; checks in `__post_init__`)."""

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments these options give the env factory (default: every field as is)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def played_env(self) -> PlayedEnv | None:
        """For an env that plays another one elsewhere (an env server), what episodes record: the played
        env's name, experts and packages. None (the default): the env plays itself (`EnvSpec.played`)."""
        return None

    def replays(self) -> str | None:
        """For an env whose replays depend on its options (an env server): "" when its episodes replay from their
        seed, task id and actions, else why not. None (the default): as the env's card says (`EnvCard.replays`)."""
        return None

    def probe_servers(self) -> dict[str, str] | None:
        """For an env played on servers: each server's URL -> "" when it answers its health check, else
        why not (asked when the env's episodes keep failing, while the run waits: ask the servers together,
        each within a few seconds). None (the default): no servers to ask."""
        return None


@dataclass(frozen=True)
class PlayedEnv:
    """The env a run's episodes record as played: the env itself, or for an env that plays another one
    remotely, that one as its server describes it (`EnvSpec.played`, `EnvOptions.played_env`).

    Attributes:
        name: the name episode ids use.
        experts, default_expert, expert_label: its experts, the one used when none is named, and the model
            label of the expert policy (a format with `{name}` and `{expert}`).
        packages: package versions its servers reported (recorded over the local ones); empty when local.
        episode_keys: info keys kept once per episode (`EPISODE_KEYS` and the env's own).
        has_expert: whether the env gives a plan the expert policy can replay.
    """

    name: str
    experts: tuple[str, ...] = ()
    default_expert: str | None = None
    expert_label: str = "{name}-{expert}"
    packages: Mapping[str, str] = field(default_factory=dict)
    episode_keys: tuple[str, ...] = ()
    has_expert: bool = True

    def expert_model(self, expert: str) -> str:
        """The model recorded for the expert policy playing this env."""
        return self.expert_label.format(name=self.name, expert=expert)


CARD_FIELDS = ("title", "split_notes", "run_notes", "expert_source", "task_types", "description")


@dataclass(frozen=True)
class EnvCard:
    """What people read about an env: the dataset card, `agent-sft envs` and the env server's description.

    Args:
        title: the env's name in prose ("ALFWorld").
        description: one line saying what the env is, for listings.
        task_types: the task types the env may report, for listings; empty when they depend on the
            env's options or data.
        split_notes: game split -> what the dataset card says about games from it.
        run_notes: game split -> how the start of a run describes games from it.
        expert_source: where the expert's plans come from ("the ALFWorld engine").
        replays: whether an episode plays again the same from its seed, task id and actions (`agent-sft
            verify` replays it); False for an env whose episodes depend on more (a clock, a live site), whose
            episodes verify then counts as not replayable.
        served: for an env played on servers, `"module:function"` or a callable given the env's options as
            the folder's config recorded them (a dict) and returning what the dataset card says was played
            there ("" for nothing).
    """

    title: str = ""
    description: str = ""
    task_types: tuple[str, ...] = ()
    split_notes: Mapping[str, str] = field(default_factory=dict)
    run_notes: Mapping[str, str] = field(default_factory=dict)
    expert_source: str = ""
    replays: bool = True
    served: str | Callable[[dict], str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_types", tuple(self.task_types))

    def served_text(self, options: Mapping[str, Any]) -> str:
        """What the card says was played on the servers, given the recorded options ("" when nothing)."""
        return str(load_entry_point(self.served)(dict(options or {})) or "") if self.served else ""


@dataclass(frozen=True)
class EnvSpec:
    """How to build an environment and what agent-sft needs to know about it.

    Args:
        name: the registry name, part of every episode id (`alfworld`).
        entry_point: `"module:attr"` (imported only where the env is built) or a callable. Env workers
            are separate processes: a callable must be importable there (a module on `sys.path`).
        aliases: other names for the same env (`alfworld/AlfredTWEnv`); they give the same episode ids.
        options: the env's options dataclass (an `EnvOptions` with `option` fields), set as
            `env.<name>.<field>` or, for the selected env, `env.<field>`.
        packages: distributions whose versions are recorded with every episode.
        eval_splits: game splits holding evaluation games (the dataset card warns about them).
        episode_keys: info keys, besides the protocol's `EPISODE_KEYS`, kept out of each step's info.
        expert_kwarg: the factory argument that names the expert whose plan `info["expert_plan"]`
            carries (None when the env has no expert); it gets None when the policy is not the expert.
        experts: the experts `policy.expert` may name (empty: any, the env judges).
        expert_label: the model recorded for the expert policy, a format with `{name}` and `{expert}`.
        shared_process: whether two instances may live in one process (False when the env changes
            process-wide state, such as `sys.argv` or the global `random`): the `thread` env backend
            (`env.backend`) refuses such an env, and code building envs in-process must honour it.
        templates: `"package:folder"` holding the env's prompt templates `<name>_<style>.txt`.
        extra: the agent-sft extra that installs the engine (`pip install 'agent-sft[<extra>]'`);
            a run of this env without its `packages` installed is refused, naming it.
        card: the words people read about the env (`EnvCard`). The card's fields are also accepted as
            keywords of their own (`title=...`) and read as attributes (`spec.title`).
        filters_tasks: who keeps only the run's task types (`env.task_types`): True, the env itself (its
            factory is given `task_types` and lists only those tasks); False, the run's plan, which keeps
            the tasks whose `task_type` is listed (the factory is not given them).
        goal_marker: for an env whose info gives no `goal`, the text of its first observation that the
            goal follows ("Your task is to: "); the prompt's task description is read from there.
        forward_env_vars: prefixes of environment variables the env reads (`ALFWORLD_`), passed on to
            the processes that play it elsewhere (Ray's collector actors).
        prepare: `"module:function"` or a callable run before a collection starts (not when the config is
            read), given the env's options; it may reach what the env needs (a server) and returns the
            option values to set from what it found (e.g. the served env's name), raising `ConfigError`
            when the env cannot be used.
        tools: with `prompt.actions=tools`, `"module:function"` or a callable given the episode's first info
            and returning its `envs.tools.Tool`s (the env's own functions: WebShop's `search` and `click`);
            None, or an empty answer: the generic `act(command)`.
    """

    name: str
    entry_point: str | Callable[..., Any]
    aliases: tuple[str, ...] = ()
    options: type | None = None
    packages: tuple[str, ...] = ()
    eval_splits: tuple[str, ...] = ()
    episode_keys: tuple[str, ...] = ()
    expert_kwarg: str | None = "expert"
    experts: tuple[str, ...] = ()
    expert_label: str = "{name}-{expert}"
    shared_process: bool = True
    templates: str | None = None
    extra: str | None = None
    prepare: str | Callable[..., Any] | None = None
    card: EnvCard = field(default_factory=EnvCard)
    filters_tasks: bool = False
    goal_marker: str | None = None
    forward_env_vars: tuple[str, ...] = ()
    tools: str | Callable[..., Any] | None = None
    # The card's fields as keywords of their own (the spelling before `card`), folded into `card`.
    title: InitVar[str | None] = None
    split_notes: InitVar[Mapping[str, str] | None] = None
    run_notes: InitVar[Mapping[str, str] | None] = None
    expert_source: InitVar[str | None] = None
    task_types: InitVar[tuple[str, ...] | None] = None
    description: InitVar[str | None] = None

    def __post_init__(self, title: Any, split_notes: Any, run_notes: Any, expert_source: Any, task_types: Any,
                      description: Any) -> None:
        if isinstance(self.entry_point, str) and ":" not in self.entry_point:
            raise ValueError(f"env {self.name!r}: entry_point must be 'module:attr', got {self.entry_point!r}")
        if self.options is not None and not dataclasses.is_dataclass(self.options):
            raise TypeError(f"env {self.name!r}: options must be a dataclass, got {self.options!r}")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "experts", tuple(self.experts))
        object.__setattr__(self, "forward_env_vars", tuple(self.forward_env_vars))
        prose = {"title": title, "split_notes": split_notes, "run_notes": run_notes, "expert_source": expert_source,
                 "task_types": task_types, "description": description}
        given = {k: v for k, v in prose.items() if v is not None}
        if given:
            object.__setattr__(self, "card", dataclasses.replace(self.card, **given))

    # --- building -----------------------------------------------------------------------------------

    def load(self) -> Callable[..., Any]:
        """The factory the entry point names (imports its module)."""
        return load_entry_point(self.entry_point)

    def make(self, **kwargs: Any) -> Any:
        """Build the env in this process with `kwargs` as they are."""
        return self.load()(**kwargs)

    def package_versions(self) -> dict[str, str]:
        """The installed versions of `packages` (recorded with every episode of the env)."""
        return installed_versions(self.packages)

    def missing_packages(self) -> list[str]:
        """The distributions of `packages` that are not installed (nothing is imported)."""
        found = self.package_versions()
        return [dist for dist in self.packages if dist not in found]

    def install_hint(self) -> str:
        """How to install what the env needs."""
        if self.extra:
            return f"pip install 'agent-sft[{self.extra}]'"
        return "pip install " + " ".join(self.packages) if self.packages else ""

    def default_expert(self) -> str | None:
        """The expert a run uses when `policy.expert` names none: the first the spec lists."""
        return self.experts[0] if self.experts else None

    # --- options ------------------------------------------------------------------------------------

    def option_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.options)) if self.options is not None else []

    def build_options(self, values: Mapping[str, Any] | None = None) -> Any:
        """The options instance from `values` (field -> value), checked by its `__post_init__`.

        Raises:
            ConfigError: naming the key `env.<name>.<option>` and what is wrong.
        """
        if self.options is None:
            if values:
                raise ConfigError(f"env.{self.name}: this environment takes no options (got {', '.join(values)})")
            return None
        try:
            return self.options(**dict(values or {}))
        except OptionError as err:
            raise ConfigError(f"env.{self.name}.{err.name}: {err.message}") from None
        except TypeError as err:
            raise ConfigError(f"env.{self.name}: {err}") from None

    def fingerprint(self, options: Any) -> dict[str, Any]:
        """The option values that decide the episodes' content (fields with `fingerprint=True`)."""
        if options is None:
            return {}
        return {
            f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.metadata.get("fingerprint", True)
        }

    def kwargs(
        self, options: Any, *, seed: int, max_steps: int, task_types: list[str], expert: str | None
    ) -> dict[str, Any]:
        """The env factory's keyword arguments: the generic ones (`GENERIC_KWARGS`) and the options."""
        out: dict[str, Any] = {"seed": seed, "max_steps": max_steps}
        if self.filters_tasks:
            out["task_types"] = list(task_types) or None
        if self.expert_kwarg:
            out[self.expert_kwarg] = expert
        if options is not None:
            out.update(options.kwargs() if hasattr(options, "kwargs") else dataclasses.asdict(options))
        return out

    # --- what the rest reads ------------------------------------------------------------------------

    def expert_model(self, expert: str) -> str:
        """The model recorded for the expert policy playing this env."""
        return self.expert_label.format(name=self.name, expert=expert)

    def info_keys_per_episode(self) -> frozenset[str]:
        return frozenset(EPISODE_KEYS) | frozenset(self.episode_keys)

    def played(self, options: Any, name: str | None = None) -> PlayedEnv:
        """What episodes of this env record as played: for an env playing another one remotely (its
        options' `played_env()`), that env as its servers describe it; else this env itself, under `name`
        (default: its own name)."""
        remote = options.played_env() if options is not None and hasattr(options, "played_env") else None
        if remote is None:
            return self.as_played(name)
        keys = self.info_keys_per_episode() | set(remote.episode_keys)
        return dataclasses.replace(remote, episode_keys=tuple(sorted(keys)))

    def as_played(self, name: str | None = None) -> PlayedEnv:
        """This env as episodes record it, under `name` (default: its own name); its expert keeps the
        label this spec gives it (`expert_model`)."""
        return PlayedEnv(name or self.name, self.experts, self.default_expert(),
                         self.expert_label.replace("{name}", self.name),
                         episode_keys=tuple(sorted(self.info_keys_per_episode())), has_expert=bool(self.expert_kwarg))


for _name in CARD_FIELDS:  # `spec.title` reads `spec.card.title`
    setattr(EnvSpec, _name, property(lambda self, _n=_name: getattr(self.card, _n), doc=f"`card.{_name}`"))


def load_entry_point(entry_point: str | Callable[..., Any]) -> Callable[..., Any]:
    """`"module:attr"` imported, or the callable itself."""
    if not isinstance(entry_point, str):
        return entry_point
    mod, _, attr = entry_point.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj

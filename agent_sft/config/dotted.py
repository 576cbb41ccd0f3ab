"""Dotted keys over config dataclasses: field types and coercion, aliases, env options, key listings.

Works on any dataclass config (a field with `metadata["env_options"]` holds each env's options, set as
`env.<env>.<option>` or, for the selected env, `env.<option>`); `agent_sft.config.schema` holds the configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from agent_sft.errors import ConfigError

# A key's name says what it means. These canonical keys are stored in the fields named after verl-agent's
# config (a folder's recorded config and its fingerprint use those names), so both spellings work, forever.
CANONICAL = {
    "loop.parallel": "data.val_batch_size",  # episodes in flight
    "env.samples_per_task": "env.rollout.n",
    "env.pool": "env.backend",  # process | thread | ray
}
_CANONICAL_OF = {stored: key for key, stored in CANONICAL.items()}

# Every other spelling of a key -> the field it sets: verl-agent's, and the canonical keys above.
ALIASES = {
    "actor_rollout_ref.model.path": "policy.model",
    "actor_rollout_ref.rollout.val_kwargs.temperature": "policy.temperature",
    "actor_rollout_ref.rollout.val_kwargs.top_p": "policy.top_p",
    "actor_rollout_ref.rollout.val_kwargs.top_k": "policy.top_k",
    "actor_rollout_ref.rollout.val_kwargs.do_sample": "policy.do_sample",
    "actor_rollout_ref.rollout.response_length": "policy.max_tokens",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "policy.tensor_parallel_size",
    "actor_rollout_ref.rollout.gpu_memory_utilization": "policy.gpu_memory_utilization",
    "trainer.default_local_dir": "output.dir",
    **CANONICAL,
}


def canonical(key: str) -> str:
    """The name a field's key is listed and checked under (`data.val_batch_size` -> `loop.parallel`)."""
    return _CANONICAL_OF.get(key, key)


def spellings(key: str) -> list[str]:
    """The other keys that set what the canonical `key` sets: its stored field's and verl-agent's."""
    stored = CANONICAL.get(key, key)
    return ([stored] if stored != key else []) + [a for a, t in ALIASES.items() if t == stored and a != key]


def yaml_syntax_error(e: Exception) -> str:
    """One line for a YAML syntax error (PyYAML's own message spans several): where (1-based), what, and in
    what construct."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and (mark is None or start.line != mark.line):
        context += f" that starts at line {start.line + 1}"
    return f"YAML syntax error{where}: {what}" + (f" ({context})" if context else "")


# verl-agent trainer keys that mean nothing here but appear in copied commands: accepted and ignored.
IGNORED_PREFIXES = ("trainer.", "algorithm.", "critic.", "reward_model.", "actor_rollout_ref.")

# The `data.` keys of verl's PPO trainer (verl-agent's `ppo_trainer.yaml`, verl's `data/legacy_data.yaml`,
# the DAPO recipe's `gen_batch_size`): ignored too, sub-keys included (`data.custom_cls.path`). Any other
# `data.` key is ours, so a misspelled one is an error rather than a silently ignored verl key.
VERL_DATA_KEYS = frozenset({
    "tokenizer", "use_shm", "train_files", "val_files", "train_max_samples", "val_max_samples", "prompt_key",
    "reward_fn_key", "max_prompt_length", "max_response_length", "train_batch_size", "gen_batch_size",
    "tool_config_path", "return_raw_input_ids", "return_raw_chat", "return_full_prompt", "shuffle", "seed",
    "dataloader_num_workers", "image_patch_size", "validation_shuffle", "filter_overlong_prompts",
    "filter_overlong_prompts_workers", "truncation", "image_key", "video_key", "trust_remote_code", "custom_cls",
    "return_multi_modal_inputs", "sampler", "datagen", "databuffer", "apply_chat_template_kwargs",
})


def ignored(key: str, known: set[str]) -> bool:
    """Whether `key` is a verl-agent trainer key with no meaning for collection (accepted and ignored)."""
    if key in ALIASES or key in known or key in _CANONICAL_OF:
        return False
    if key.startswith("data."):
        return key.split(".")[1] in VERL_DATA_KEYS
    return key.startswith(IGNORED_PREFIXES)


def did_you_mean(key: str, candidates: list[str]) -> str:
    """`; did you mean <key>?` for the candidate closest to a misspelled `key`, or ''."""
    close = difflib.get_close_matches(key, candidates, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _known_near(cfg: Any, key: str) -> list[str]:
    """The keys a misspelled `key` may have meant: those of its section (other spellings and the selected
    env's `env.<option>` included), or every key when its section is unknown."""
    listed = keys(type(cfg))
    known = listed + [stored for stored, name in _CANONICAL_OF.items() if name in listed]
    known += [alias for alias, target in ALIASES.items() if target in known and alias not in known]
    env = getattr(cfg, "env", None)
    if dataclasses.is_dataclass(env) and _holds_env_options(env):
        known += [f"env.{name}" for name in _env_option_names(env)]
    section = key.split(".")[0]
    return [k for k in known if k.split(".")[0] == section] or known


def field_type(tp: Any) -> tuple[type, bool]:
    """(base type, optional?) of an annotation such as `int | None` or `list[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return field_type(args[0])[0], True
    if origin is not None:
        return origin, False
    return tp, False


def coerce(key: str, value: Any, f: dataclasses.Field, hint: Any) -> Any:
    base, optional = field_type(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required (got {value!r})")
    if isinstance(value, str) and base is not str:
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse {value!r}: {yaml_syntax_error(e)}") from None
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise TypeError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            value = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        elif base is str:
            value = str(value)
        elif base is list:
            if isinstance(value, (str, int, float)):
                value = [value]
            value = [str(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(base, '__name__', base)}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices and value is not None:
        bad = [v for v in (value if isinstance(value, list) else [value]) if v not in choices]
        if bad:
            raise ConfigError(f"{key}: {bad[0]!r} is not one of {', '.join(map(str, choices))}")
    return value


def check_fields(cfg: Any, prefix: str = "") -> None:
    """Coerce every field of a config in place as a dotted key would be (a config built in Python gets the
    type and choice checks of one loaded from keys); the mappings of env options and `env.mix` are checked
    when the run's lanes are resolved. Idempotent.

    Raises:
        ConfigError: naming the key, as `set_key` does.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = canonical(prefix + f.name), getattr(cfg, f.name)
        if f.metadata.get("env_options") or f.metadata.get("mix"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            if not dataclasses.is_dataclass(value):
                raise ConfigError(f"{key}: expected a {hints[f.name].__name__}, got {value!r}")
            check_fields(value, prefix + f.name + ".")
        else:
            setattr(cfg, f.name, coerce(key, value, f, hints[f.name]))


def keys(cfg_cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, by its canonical name (with `env.<env>.<option>` for every
    registered env's options)."""
    out = []
    hints = typing.get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        tp = hints[f.name]
        if f.metadata.get("env_options"):
            out += [k for k, _, _ in _env_option_rows(prefix)]
        elif dataclasses.is_dataclass(tp):
            out += keys(tp, f"{prefix}{f.name}.")
        else:
            out.append(canonical(prefix + f.name))
    return out


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted key (any of its spellings) on a config, coercing and validating the value; a bad value
    is reported under the key as written."""
    written, key = key, ALIASES.get(key, key)
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        if _holds_env_options(obj) and _is_env_option(obj, parts[i:]):
            return _set_env_option(obj, key, parts[i:], value)
        hints = typing.get_type_hints(type(obj))
        names = {f.name: f for f in dataclasses.fields(obj) if not f.metadata.get("env_options")}
        if part in names and names[part].metadata.get("mix"):
            return _set_mix(obj, part, key, parts[i + 1:], value)
        if part not in names:
            where = ".".join(parts[:i])
            named = {k[len(where) + 1:] for k in CANONICAL if k.rpartition(".")[0] == where}
            named |= set(names) | set(_env_option_names(obj) if _holds_env_options(obj) else [])
            allowed = ", ".join(sorted(named))
            near = f" under {where!r}" if where else ""
            owners = _envs_with_option(part) if _holds_env_options(obj) else []
            if _holds_env_options(obj):
                near += " nor a registered environment"
            if owners:
                near += f"; it is an option of {', '.join(owners)} (env.{owners[0]}.{part}), not of {obj.env_name}"
            else:
                near += did_you_mean(key, _known_near(cfg, key))
            raise ConfigError(f"unknown config key {key!r}: {part!r} is not a field{near} (allowed: {allowed})")
        if i == len(parts) - 1:
            f = names[part]
            if dataclasses.is_dataclass(hints[part]):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected a mapping of {', '.join(keys(hints[part]))}")
                for k, v in value.items():
                    set_key(cfg, f"{key}.{k}", v)
                return
            setattr(obj, part, coerce(written, value, f, hints[part]))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i+1])!r} takes a value, not sub-keys")


def _set_mix(obj: Any, part: str, key: str, rest: list[str], value: Any) -> None:
    """`env.mix` (a list or mapping of entries) or `env.mix.<label>[.<field>...]`: stored as given, checked
    when the run's lanes are resolved (`agent_sft.config.lanes.lanes`)."""
    mix = getattr(obj, part)
    if not rest:
        setattr(obj, part, normalize_mix(value, key))
        return
    label, path = rest[0], rest[1:]
    if not path:
        mix[label] = normalize_mix({label: value}, key)[label]
        return
    if isinstance(value, str) and path[-1] not in ("env", "expert", "template"):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    node = mix.setdefault(label, {})
    for p in path[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p!r} takes a value, not sub-keys")
    node[path[-1]] = value


def env_spec(name: str, key: str = "env.env_name") -> Any:
    """The spec of env `name`, or a ConfigError naming `key` and the registered envs."""
    from agent_sft.envs import find_spec, registered

    found = find_spec(name)
    if found is None:
        raise ConfigError(f"{key}: unknown environment {name!r}; registered: {', '.join(registered())}")
    return found


def _envs_with_option(name: str) -> list[str]:
    """The registered envs having an option `name`."""
    from agent_sft.envs import find_spec, registered

    out = []
    for n in registered():
        spec = find_spec(n)
        if spec is not None and spec.name not in out and name in _option_fields(spec):
            out.append(spec.name)
    return out


def _option_fields(spec: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in spec.option_fields()}


def _env_option_names(env: Any) -> list[str]:
    """The options of the selected env, as `env.<option>` may name them (none for an unknown env)."""
    from agent_sft.envs import find_spec

    spec = find_spec(env.env_name)
    return sorted(_option_fields(spec)) if spec is not None else []


def _is_env_option(env: Any, parts: list[str]) -> bool:
    """Whether `env.<parts>` names an env's options: `<env>.<option>`, `<env>` (a mapping), or an option
    of the selected env (`env.data_path` for ALFWorld's `env.alfworld.data_path`)."""
    head = parts[0]
    generic = {f.name for f in dataclasses.fields(env) if not f.metadata.get("env_options")}
    if len(parts) == 1 and head in _env_option_names(env):
        return True
    if head in generic:
        return False
    from agent_sft.envs import find_spec

    return find_spec(head) is not None


def _set_env_option(env: Any, key: str, parts: list[str], value: Any) -> None:
    """Store `env.<env>.<option>` (raw, coerced to the field's type); checked when the env's options are built."""
    if len(parts) == 1 and parts[0] in _env_option_names(env):
        spec, rest = env_spec(env.env_name), parts
    else:
        spec, rest = env_spec(parts[0], key), parts[1:]
    prefix = f"env.{spec.name}"
    fields = _option_fields(spec)
    if not rest:
        if not isinstance(value, dict):
            names = ", ".join(f"{prefix}.{n}" for n in fields) or "(no options)"
            raise ConfigError(f"{key}: expected a mapping of {names}")
        for k, v in value.items():
            _set_env_option(env, f"{prefix}.{k}", [spec.name, str(k)], v)
        return
    name = ".".join(rest)
    if name not in fields:
        allowed = ", ".join(f"{prefix}.{n}" for n in fields) or "none: it takes no options"
        near = did_you_mean(f"{prefix}.{name}", [f"{prefix}.{n}" for n in fields])
        raise ConfigError(
            f"unknown config key {key!r}: environment {spec.name!r} has no option {name!r}{near} (allowed: {allowed})")
    hint = typing.get_type_hints(spec.options)[name]
    env.options.setdefault(spec.name, {})[name] = coerce(f"{prefix}.{name}", value, fields[name], hint)


def _env_option_rows(prefix: str) -> list[tuple[str, Any, str]]:
    """(key, default, help) of every registered env's options (aliases listed once, under the env's name)."""
    from agent_sft.envs import find_spec, registered

    out, seen = [], set()
    for name in registered():
        spec = find_spec(name)
        if spec is None or spec.name in seen or spec.options is None:
            continue
        seen.add(spec.name)
        defaults = spec.options()
        out += [(f"{prefix}{spec.name}.{f.name}", getattr(defaults, f.name), f.metadata.get("help", ""))
                for f in spec.option_fields()]
    return out


def flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def describe(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every field, for `--help` and the docs: the canonical key, its help naming
    its other spellings ("... (also data.val_batch_size).")."""
    out = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        if f.metadata.get("env_options"):
            out += _env_option_rows(prefix)
        elif dataclasses.is_dataclass(hints[f.name]):
            out += describe(hints[f.name], f"{prefix}{f.name}.")
        else:
            key, help = canonical(prefix + f.name), f.metadata.get("help", "")
            if help and spellings(key):
                help = f"{help.rstrip('.')} (also {', '.join(spellings(key))})."
            out.append((key, getattr(inst, f.name), help))
    if prefix:
        return out
    # sections in the classes' order, a canonical key listed in its own section
    sections = list(dict.fromkeys(CANONICAL.get(k, k).split(".")[0] for k, _, _ in out))
    return sorted(out, key=lambda row: sections.index(row[0].split(".")[0]))


def _holds_env_options(obj: Any) -> bool:
    """Whether a config dataclass holds the envs' options (the `env` section)."""
    return any(f.metadata.get("env_options") for f in dataclasses.fields(obj))

MIX_FIELDS = {
    "env": "the env's registered name (default: the entry's label)",
    "name": "the entry's label, for a second entry of the same env (default: the env's name)",
    "episodes": "episodes of this env (default: a weight's share of env.num_episodes, else one pass over its tasks)",
    "weight": "share of env.num_episodes (after the entries with `episodes`), > 0",
    "max_steps": "step budget of this env's episodes (default env.max_steps)",
    "expert": "the expert policy.type=expert replays here (default policy.expert, else the env's first)",
    "template": "prompt template file for this env (default prompt.template, else the env's built-in one)",
    "task_types": "only these task types of this env (default: all)",
    "until_success": "sample each task of this env until this many succeed (default env.until_success)",
    "max_samples_per_task": "this env's budget of samples per task with until_success (default "
                            "env.max_samples_per_task, else 8)",
    "options": "the env's options as a mapping (they may also be given as keys of the entry)",
}


def normalize_mix(value: Any, key: str = "env.mix") -> dict[str, dict]:
    """`env.mix` as given (a list of entries, or a mapping label -> entry) -> an ordered mapping label -> entry.

    Raises:
        ConfigError: not a list or mapping, an entry that is not a mapping or names no env, a repeated label.
    """
    if value is None or value == "" or value == []:
        return {}
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse {value!r}: {yaml_syntax_error(e)}") from None
    out: dict[str, dict] = {}
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = []
        for i, entry in enumerate(value):
            if isinstance(entry, str):
                entry = {"env": entry}
            if not isinstance(entry, dict) or not (entry.get("name") or entry.get("env")):
                raise ConfigError(f"{key}[{i}]: expected a mapping with `env` (e.g. {{env: textworld, weight: 1}}), got {entry!r}")
            items.append((str(entry.get("name") or entry["env"]), entry))
    else:
        raise ConfigError(f"{key}: expected a list of entries or a mapping label -> entry, got {value!r}")
    for label, entry in items:
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}.{label}: expected a mapping of {', '.join(MIX_FIELDS)} and env options")
        if label in out:
            raise ConfigError(f"{key}: two entries are labelled {label!r}; give the second a `name`")
        entry = {k: v for k, v in entry.items() if k != "name"}
        out[label] = entry
    return out

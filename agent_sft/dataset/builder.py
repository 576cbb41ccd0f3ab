"""A `datasets` builder for agent-sft dataset folders: configs `raw` and `sft`, splits train/validation.

Usable on its own::

    from agent_sft.dataset.builder import AgentSFT
    b = AgentSFT(config_name="sft", data_dir="path/to/folder")
    b.download_and_prepare()
    ds = b.as_dataset()

The data files are the ones the folder's README lists (exactly the sealed shards), resolved when the
builder is made, so a folder that grew (resume, merge) gets a new cache entry instead of stale rows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import pyarrow as pa
import yaml

try:
    from datasets.builder import Key  # names the file and record batch a table came from
except ImportError:  # a `datasets` before Key takes any hashable key

    def Key(file: int, batch: int) -> str:  # noqa: N802 - stands in for the class
        return f"{file}_{batch}"

from agent_sft.dataset import views
from agent_sft.errors import DatasetError
from agent_sft.records import SPLITS
from agent_sft.records import schema as config_schema

_SPLIT_NAMES = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION}

Configs = dict[str, dict[str, list[str]]]  # config -> split -> data file paths


def read_readme(folder: str) -> tuple[Configs | None, str | None]:
    """The README front matter as `datasets.load_dataset(folder)` reads it: config -> split -> data file
    paths relative to the folder ({} when it lists none; None when the folder has no README.md), and why
    `datasets` cannot read it (then the listing is None too; else None)."""
    try:
        with open(os.path.join(folder, "README.md"), encoding="utf-8", newline="") as fh:  # as DatasetCard.load
            text = fh.read()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({e})"
    try:
        configs = (_card_reader() or _read_configs)(text)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError) as e:
        return None, f"its YAML front matter cannot be read ({' '.join(str(e).split())[:200]})"
    if configs is None:  # the card's own rule: datasets then sees no configs at all
        return None, "its YAML front matter has no end (cut short?)" if text.startswith("---") else "it has no YAML front matter"
    return configs, None


def readme_error(folder: str, why: str) -> DatasetError:
    """The error for a README that `datasets` cannot read (`why`, from `read_readme`)."""
    return DatasetError(f"{os.path.join(folder, 'README.md')}: {why}; run `agent-sft repair {folder}` to write it again")


@functools.cache
def _card_reader() -> Callable[[str], Configs | None] | None:
    """The configs of a card's text read by the helpers `datasets` and `huggingface_hub` read it with
    (None when they are not where these versions keep them: `_read_configs` reads it then)."""
    try:
        from datasets.data_files import sanitize_patterns
        from datasets.utils.metadata import MetadataConfigs
        from huggingface_hub import DatasetCard
        from huggingface_hub.repocard import REGEX_YAML_BLOCK
    except (ImportError, AttributeError):
        return None

    def read(text: str) -> Configs | None:
        if not REGEX_YAML_BLOCK.search(text):
            return None
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data)
        return {name: {split: list(paths) for split, paths in sanitize_patterns(c.get("data_files") or []).items()}
                for name, c in configs.items()}

    return read


def _read_configs(text: str) -> Configs | None:
    """The configs of a card's text, read plainly: the YAML between a first line `---` and the next such
    line (None when there is no such block), its `configs:` entries, each `data_files` as split -> paths."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    end = next((i for i, line in enumerate(lines[1:], 1) if line.rstrip() == "---"), None)
    if end is None:
        return None
    meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    if not isinstance(meta, dict):
        raise ValueError(f"the front matter is a {type(meta).__name__}, not a mapping")
    entries = meta.get("configs") or []
    if not isinstance(entries, list):
        raise ValueError(f"`configs` is a {type(entries).__name__}, not a list")
    out: Configs = {}
    for entry in entries:
        if not isinstance(entry, dict) or "config_name" not in entry:
            raise ValueError(f"a `configs` entry without `config_name`: {entry}")
        out[str(entry["config_name"])] = _split_paths(entry.get("data_files") or [])
    return out


def _split_paths(data_files: Any) -> dict[str, list[str]]:
    """`data_files` as split -> paths, in the forms a card may give it (as `datasets` sanitizes them)."""
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, dict):
        return {str(k): v if isinstance(v, list) else [v] for k, v in data_files.items()}
    if isinstance(data_files, list) and any(isinstance(f, dict) for f in data_files):
        out: dict[str, list[str]] = {}
        for f in data_files:
            if not (isinstance(f, dict) and "split" in f and isinstance(f.get("path"), (str, list))):
                raise ValueError(f"a `data_files` entry is not a split and a path: {f}")
            out[str(f["split"])] = f["path"] if isinstance(f["path"], list) else [f["path"]]
        return out
    if isinstance(data_files, list):
        return {"train": list(data_files)}
    raise ValueError(f"`data_files` is a {type(data_files).__name__}")


def readme_data_files(folder: str, config: str) -> dict[str, list[str]]:
    """split -> absolute data file paths of `config`, as the folder's README front matter lists them.

    Raises:
        DatasetError: the README cannot be read as `datasets` reads it, or it lists no data for `config`.
    """
    configs, why = read_readme(folder)
    if why is not None:
        raise readme_error(folder, why)
    if configs is None:
        raise DatasetError(f"{folder}: no README.md; not an agent-sft dataset folder")
    if config in configs:
        return {split: [os.path.join(folder, p) for p in paths] for split, paths in configs[config].items()}
    raise DatasetError(f"{folder}: config {config!r} has no data (configs with data: {', '.join(configs) or 'none'})")


@dataclass
class AgentSFTConfig(datasets.BuilderConfig):
    """BuilderConfig for agent-sft folders; `data_dir` is the folder, `data_files` filled from its README.
    `kind` is a view's kind (`views`) for a config named by its folder (a named build)."""

    kind: str = ""
    additions: tuple = ()  # the folder's schema additions (`records.ADDITIONS`)

    @property
    def schema(self) -> pa.Schema:
        return views.schema(self.kind, tuple(self.additions)) if self.kind else config_schema(self.name, self.additions)


class AgentSFT(datasets.ArrowBasedBuilder):
    BUILDER_CONFIG_CLASS = AgentSFTConfig
    BUILDER_CONFIGS = [
        AgentSFTConfig(name="sft", description="Training rows: conversations in `messages` plus metadata."),
        AgentSFTConfig(name="raw", description="One row per episode: every step, prompt window, response, reward."),
        AgentSFTConfig(name="dpo", description="Preference pairs (prompt, chosen, rejected) from episodes of a task."),
        AgentSFTConfig(name="scores", description="Quality scores of every episode, keyed by episode_id."),
    ]
    DEFAULT_CONFIG_NAME = "sft"

    @classmethod
    def named(cls, name: str) -> type[AgentSFT]:
        """The builder class with a named build `name` (rows as `sft`) among its configs."""
        if any(c.name == name for c in cls.BUILDER_CONFIGS):
            return cls
        config = AgentSFTConfig(name=name, kind=views.BUILD, description=f"Training rows of the named build {name!r}.")
        return type(cls.__name__, (cls,), {"BUILDER_CONFIGS": [*cls.BUILDER_CONFIGS, config], "__module__": cls.__module__})

    def __init__(self, *args, **kwargs):
        # Resolve the data files now: they are part of the cache key, unlike data_dir alone.
        if kwargs.get("data_dir") and not kwargs.get("data_files"):
            kwargs["data_files"] = readme_data_files(os.path.abspath(kwargs["data_dir"]), kwargs.get("config_name") or "sft")
        super().__init__(*args, **kwargs)

    def _info(self):
        return datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(self.config.schema))

    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError("AgentSFT needs data_dir=<dataset folder> (or data_files)")
        files = dl_manager.download(self.config.data_files)
        return [
            datasets.SplitGenerator(name=_SPLIT_NAMES.get(split, split), gen_kwargs={"files": files[split]})
            for split in SPLITS if split in files
        ]

    def _generate_tables(self, files):
        schema = self.config.schema
        for i, path in enumerate(files):
            with pa.memory_map(path) as src:
                reader = pa.ipc.open_file(src)
                for j in range(reader.num_record_batches):
                    # Shards carry agent_sft metadata in their schema; the features come from _info.
                    table = pa.Table.from_batches([reader.get_batch(j)]).replace_schema_metadata(None).cast(schema)
                    yield Key(i, j), table

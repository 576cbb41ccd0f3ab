"""A `datasets` builder for agent-sft dataset folders: configs `raw` and `sft`, splits train/validation.

Usable on its own::

    from agent_sft.hf_builder import AgentSFT
    b = AgentSFT(config_name="sft", data_dir="path/to/folder")
    b.download_and_prepare()
    ds = b.as_dataset()

The data files are the ones the folder's README lists (exactly the sealed shards), resolved when the
builder is made, so a folder that grew (resume, merge) gets a new cache entry instead of stale rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import pyarrow as pa
import yaml
from datasets.builder import Key

from agent_sft.errors import DatasetError
from agent_sft.records import SCHEMAS, SPLITS

_SPLIT_NAMES = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION}


def read_readme(folder: str) -> tuple[dict[str, dict[str, list[str]]] | None, str | None]:
    """The README front matter as `datasets.load_dataset(folder)` reads it: config -> split -> data file
    paths relative to the folder ({} when it lists none; None when the folder has no README.md), and why
    `datasets` cannot read it (then the listing is None too; else None)."""
    from datasets.data_files import sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    try:
        with open(os.path.join(folder, "README.md"), encoding="utf-8", newline="") as fh:  # as DatasetCard.load
            text = fh.read()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({e})"
    if not REGEX_YAML_BLOCK.search(text):  # the card's own rule: datasets then sees no configs at all
        return None, "its YAML front matter has no end (cut short?)" if text.startswith("---") else "it has no YAML front matter"
    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data)
        return {name: {split: list(paths) for split, paths in sanitize_patterns(c.get("data_files") or []).items()}
                for name, c in configs.items()}, None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
        return None, f"its YAML front matter cannot be read ({' '.join(str(e).split())[:200]})"


def readme_data_files(folder: str, config: str) -> dict[str, list[str]]:
    """split -> absolute data file paths of `config`, as the folder's README front matter lists them.

    Raises:
        DatasetError: the README cannot be read as `datasets` reads it, or it lists no data for `config`.
    """
    configs, why = read_readme(folder)
    if why is not None:
        raise DatasetError(f"{os.path.join(folder, 'README.md')}: {why}; run `agent-sft repair {folder}` to write it again")
    if configs is None:
        raise DatasetError(f"{folder}: no README.md; not an agent-sft dataset folder")
    if config in configs:
        return {split: [os.path.join(folder, p) for p in paths] for split, paths in configs[config].items()}
    raise DatasetError(f"{folder}: config {config!r} has no data (configs with data: {', '.join(configs) or 'none'})")


@dataclass
class AgentSFTConfig(datasets.BuilderConfig):
    """BuilderConfig for agent-sft folders; `data_dir` is the folder, `data_files` filled from its README."""


class AgentSFT(datasets.ArrowBasedBuilder):
    BUILDER_CONFIG_CLASS = AgentSFTConfig
    BUILDER_CONFIGS = [
        AgentSFTConfig(name="sft", description="Training rows: conversations in `messages` plus metadata."),
        AgentSFTConfig(name="raw", description="One row per episode: every step, prompt window, response, reward."),
    ]
    DEFAULT_CONFIG_NAME = "sft"

    def __init__(self, *args, **kwargs):
        # Resolve the data files now: they are part of the cache key, unlike data_dir alone.
        if kwargs.get("data_dir") and not kwargs.get("data_files"):
            kwargs["data_files"] = readme_data_files(os.path.abspath(kwargs["data_dir"]), kwargs.get("config_name") or "sft")
        super().__init__(*args, **kwargs)

    def _info(self):
        return datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(SCHEMAS[self.config.name]))

    def _split_generators(self, dl_manager):
        if not self.config.data_files:
            raise ValueError("AgentSFT needs data_dir=<dataset folder> (or data_files)")
        files = dl_manager.download(self.config.data_files)
        return [
            datasets.SplitGenerator(name=_SPLIT_NAMES.get(split, split), gen_kwargs={"files": files[split]})
            for split in SPLITS if split in files
        ]

    def _generate_tables(self, files):
        schema = SCHEMAS[self.config.name]
        for i, path in enumerate(files):
            with pa.memory_map(path) as src:
                reader = pa.ipc.open_file(src)
                for j in range(reader.num_record_batches):
                    # Shards carry agent_sft metadata in their schema; the features come from _info.
                    table = pa.Table.from_batches([reader.get_batch(j)]).replace_schema_metadata(None).cast(schema)
                    yield Key(i, j), table

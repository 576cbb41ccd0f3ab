"""What every file export starts from: the folder opened at its build, the output folder made, the rows of a
config streamed shard by shard (so an export of any size runs in bounded memory)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from agent_sft.dataset import layout, shards
from agent_sft.errors import ConfigError, CorruptShardError


def open_folder(folder: str) -> layout.Scan:
    """The folder's live shards at its current build generation.

    Raises:
        NotADatasetError: `folder` is not an agent-sft dataset folder.
    """
    return layout.open_scan(folder, layout.require_dataset(folder))


def make_out(out: str) -> None:
    """Create the export folder `out` (an existing folder is written into).

    Raises:
        ConfigError: `out` is, or lies inside, a file; or it cannot be created.
    """
    layout.check_out_folder(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the export folder {out}: {e.strerror}") from None


def iter_batches(folder: str, s: layout.Scan, config: str, split: str) -> Iterator[list[dict]]:
    """Record batches of rows (dicts) of `config` (`raw` or `sft`) and `split`, shard by shard in name order."""
    items = s.raw[split] if config == "raw" else s.sft[split]
    for name, meta in sorted(items.items()):
        if not meta["rows"]:
            continue
        fname = name if config == "raw" else layout.sft_name(name, s.generation)
        for batch in shards.iter_shard_batches(layout.shard_path(folder, config, split, fname)):
            yield batch.to_pylist()


def iter_rows(folder: str, s: layout.Scan, config: str, split: str) -> Iterator[dict]:
    """The rows (dicts) of `config` (`raw` or `sft`) and `split`, shard by shard in name order."""
    for rows in iter_batches(folder, s, config, split):
        yield from rows


def iter_columns(folder: str, s: layout.Scan, config: str, split: str, columns: list[str]) -> Iterator[dict[str, list]]:
    """Only `columns` of the rows of `config` and `split`, a shard at a time as {column: values} (the other columns
    are neither read nor decompressed)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    items = s.raw[split] if config == "raw" else s.sft[split]
    for name, meta in sorted(items.items()):
        if meta["rows"]:
            fname = name if config == "raw" else layout.sft_name(name, s.generation)
            path = layout.shard_path(folder, config, split, fname)
            try:
                table = pads.dataset([path], format="ipc").to_table(columns=columns)
            except (pa.ArrowInvalid, OSError) as e:
                raise CorruptShardError(f"{path}: cannot read shard ({e}); run `agent-sft repair {folder}`") from None
            yield table.to_pydict()

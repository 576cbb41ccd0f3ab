"""What a folder may publish: config values without local paths or server addresses (the card, the
fingerprint every raw shard carries, the info uploaded to the Hub)."""

from __future__ import annotations

import os
import re
from typing import Any


def public(value: Any) -> Any:
    """A config value fit for a public card: absolute paths reduced to their last component."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public(v) for v in value]
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")):
        return os.path.basename(value.rstrip("/")) or value
    if isinstance(value, str) and ":" in value and (os.sep in value.split(":")[0]):
        return os.path.basename(value)  # file.py:function of a filter
    if isinstance(value, str) and re.match(r"https?://", value):
        return re.sub(r"^(https?://)[^/]+", r"\1<host>", value)  # a server address is not for the public
    return value


def public_info(info: dict) -> dict:
    """meta/info.json as published: config values without local paths or server addresses."""
    return {k: public(v) if k in ("config", "fingerprint", "build") else v for k, v in info.items()}

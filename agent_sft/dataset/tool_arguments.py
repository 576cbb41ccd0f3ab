"""A tools folder's `sft` rows with each call's arguments as an object, the way chat templates expect them.

Stored calls keep `function.arguments` as JSON text (one Arrow type for every tool). Qwen2.5's and Llama-3.1's
chat templates write the arguments with `tojson`, and neither transformers' `apply_chat_template` nor TRL's
`SFTTrainer` decodes them, so text arguments would train as a JSON string inside the call. Decoding them into
Arrow structs would merge every tool's parameter names into one struct (WebShop's `click` call gaining a null
`query`); `datasets.Json` keeps each object as its own JSON document and hands it back as a dict.

    ds = agent_sft.tool_arguments_as_objects(agent_sft.load("webshop_tools", "sft"))
"""

from __future__ import annotations

import json
from typing import Any


def _retyped(feature: Any, json_type: Any, list_type: Any) -> Any:
    if isinstance(feature, dict):
        return {k: json_type() if k == "arguments" else _retyped(v, json_type, list_type) for k, v in feature.items()}
    if isinstance(feature, list_type):
        return list_type(_retyped(feature.feature, json_type, list_type))
    return feature


def _as_json_text(arguments: Any) -> Any:
    """Arguments that are not JSON text (a malformed call) kept as a JSON string, so they read back unchanged."""
    if not isinstance(arguments, str):
        return arguments
    try:
        json.loads(arguments)
        return arguments
    except ValueError:
        return json.dumps(arguments, ensure_ascii=False)


def _fix_messages(batch: dict[str, list]) -> dict[str, list]:
    for messages in batch["messages"]:
        for m in messages or []:
            for c in m.get("tool_calls") or []:
                c["function"]["arguments"] = _as_json_text(c["function"]["arguments"])
    return {"messages": batch["messages"]}


def tool_arguments_as_objects(ds: Any) -> Any:
    """`ds` (a `Dataset` or `DatasetDict` of `sft` rows, as `agent_sft.load` gives them) with every call's
    `function.arguments` read back as a dict. A dataset without calls comes back unchanged."""
    import datasets

    if isinstance(ds, (datasets.DatasetDict, dict)):
        return datasets.DatasetDict({k: tool_arguments_as_objects(v) for k, v in ds.items()})
    if "messages" not in ds.features:
        return ds
    features = datasets.Features(ds.features)
    features["messages"] = _retyped(ds.features["messages"], datasets.Json, datasets.List)
    if features == ds.features:
        return ds
    text = ds.map(_fix_messages, batched=True, desc="Tool-call arguments")
    return text.cast(features)

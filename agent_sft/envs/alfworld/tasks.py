"""ALFWorld's task types (short names, aliases, ALFWorld's own names), game splits and experts."""

from __future__ import annotations

TASK_TYPES = {
    "pick_and_place": "pick_and_place_simple",
    "look_at_obj_in_light": "look_at_obj_in_light",
    "pick_clean_then_place": "pick_clean_then_place_in_recep",
    "pick_heat_then_place": "pick_heat_then_place_in_recep",
    "pick_cool_then_place": "pick_cool_then_place_in_recep",
    "pick_two_obj": "pick_two_obj_and_place",
}
"""Short task-type names (what `TaskSpec.task_type` reports) -> ALFWorld's own names."""

TASK_TYPE_ALIASES = {
    "look_at_in_light": "look_at_obj_in_light",
    "examine": "look_at_obj_in_light",
    "clean": "pick_clean_then_place",
    "heat": "pick_heat_then_place",
    "cool": "pick_cool_then_place",
    "pick_two": "pick_two_obj",
    **{long: short for short, long in TASK_TYPES.items()},
}
SHORT_NAME = {long: short for short, long in TASK_TYPES.items()}

SPLITS = ("train", "valid_seen", "valid_unseen")
EXPERTS = ("planner", "handcoded")
def normalize_task_types(task_types: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Short canonical names for `task_types` (aliases and ALFWorld's long names accepted)."""
    if task_types is None:
        return list(TASK_TYPES)
    if isinstance(task_types, str):
        task_types = [task_types]
    out = []
    for name in task_types:
        key = str(name).strip().lower()
        short = key if key in TASK_TYPES else TASK_TYPE_ALIASES.get(key)
        if short is None:
            allowed = sorted(set(TASK_TYPES) | set(TASK_TYPE_ALIASES))
            raise ValueError(f"unknown ALFWorld task type {name!r}; allowed: {', '.join(allowed)}")
        if short not in out:
            out.append(short)
    if not out:
        raise ValueError(f"task_types is empty; pick from {', '.join(TASK_TYPES)}")
    return out

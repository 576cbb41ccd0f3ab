"""Reasoning for recorded steps (`agent-sft augment`): a model, through any policy backend, writes the thought
behind each known-good action of a folder's episodes (the expert's, by default); the action never changes.
The rationales are kept like `raw` under data/rationale/<name>/ (`dataset.rationales`), and a named build
with `reasoning` puts them in its assistant turns (`dataset.reasoning`).

- `template`: the hint naming the recorded action, added to the step's own prompt;
- `answer`: the reasoning and the action read from an answer, compared with the recorded one;
- `run`: `augment_folder`, the run itself.
"""

from agent_sft.augment.run import AugmentFailedError, AugmentResult, augment_folder

__all__ = ["AugmentFailedError", "AugmentResult", "augment_folder"]

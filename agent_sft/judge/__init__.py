"""The LLM judge: episodes of a folder scored by a model through any policy backend, pointwise against a
rubric or listwise against the other episodes of their task, kept like `raw` under data/judge/<name>/.

- `store`: the verdict shards (list, read, the episodes judged, write under the folder lock);
- `prompts`: the rubric templates and the compact rendering of an episode;
- `verdict`: the score read from an answer, normalised to [0, 1];
- `source`: the live raw episodes a judge reads;
- `run`: `judge_folder`, the run itself (`agent-sft judge`).
"""

from agent_sft.judge.run import JudgeFailedError, JudgeResult, judge_folder

__all__ = ["JudgeFailedError", "JudgeResult", "judge_folder"]

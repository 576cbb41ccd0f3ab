"""`agent-sft verify`: a folder's episodes replayed in their envs and checked against what was recorded.

`source` reads the folder (its recorded config rebuilt, its envs, its live raw episodes), `replay` replays one
episode and compares it, `progress` keeps a pass resumable, `run` is the pass (`verify_folder`).
"""

from agent_sft.verify.run import VERIFY, verify_folder

__all__ = ["VERIFY", "verify_folder"]

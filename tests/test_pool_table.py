"""A new env pool backend is one file (`toy_pool.py`: only the backend's methods of `SlotPool`) and one
row in the pool table: `env.backend=<it>` then plays the same episodes as the built-in backends."""

from __future__ import annotations

import partial_env
from test_pools import make_cfg, play, timeless_row

from agent_sft.rollout import BACKENDS
from agent_sft.rollout.pools import PoolBackend, register_pool


def test_a_toy_backend_is_one_file_and_one_row_and_plays_the_same_rows_as_threads():
    register_pool("inline", PoolBackend("toy_pool:InlinePool", True, "every env inline in the calling thread"))
    try:
        rows, stats = {}, {}
        for name in ("thread", "inline"):
            cfg = make_cfg(partial_env.NAME, f"env.backend={name}", "env.seed=3", "env.num_episodes=3",
                           "data.val_batch_size=2")
            episodes, stats[name] = play(cfg)
            rows[name] = [timeless_row(ep) for ep in episodes]
    finally:
        BACKENDS.pop("inline", None)
    assert len(rows["thread"]) == 3 and len({r["episode_id"] for r in rows["thread"]}) == 3
    assert rows["inline"] == rows["thread"]
    assert stats["inline"].env_backend == "inline"
    assert (stats["inline"].errors, stats["inline"].workers_started) == (0, stats["thread"].workers_started)

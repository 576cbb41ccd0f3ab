import pytest
from fixtures_data import make_episode

from agent_sft.dataset.filters import FilterError, build_filters, derive_sft
from agent_sft.dataset.formats import episode_to_row


def rows():
    eps = [make_episode(i, success=(i % 2 == 0), steps=2 + i % 5, invalid_at=(0 if i % 3 == 0 else None)) for i in range(12)]
    eps[11].end_reason = "error"
    return [episode_to_row(e) for e in eps]


def test_no_filters_but_errors_keep_every_episode():
    out, drops = derive_sft(rows(), build_filters({}), "auto")
    assert drops == {"error": 1}
    assert len({r["episode_id"] for r in out}) == 11


def test_success_only_keeps_won_episodes_and_counts_the_rest():
    out, drops = derive_sft(rows(), build_filters({"require_success": True}), "auto")
    assert all(r["success"] for r in out)
    assert drops["not_success"] == 5 and drops["error"] == 1


def test_each_episode_is_counted_once_under_its_first_failing_filter():
    rs = rows()
    out, drops = derive_sft(rs, build_filters({"require_success": True, "valid_only": True, "min_steps": 3,
                                               "drop_errors": False}), "auto")
    kept = {r["episode_id"] for r in out}
    assert sum(drops.values()) + len(kept) == len(rs)
    for r in rs:
        if r["episode_id"] in kept:
            assert r["success"] and r["num_invalid"] == 0 and r["episode_length"] >= 3


def test_reward_and_length_bounds():
    out, drops = derive_sft(rows(), build_filters({"min_final_reward": 0.5, "max_steps": 4}), "auto")
    assert all(r["final_reward"] >= 0.5 and r["episode_length"] <= 4 for r in out)
    assert drops["final_reward_below_min"] > 0 and drops["too_many_steps"] > 0


def test_user_callable_from_a_file(tmp_path):
    f = tmp_path / "myfilter.py"
    f.write_text("def short(row):\n    return row['episode_length'] <= 3\n")
    out, drops = derive_sft(rows(), build_filters({"callable": f"{f}:short"}), "auto")
    assert all(r["episode_length"] <= 3 for r in out)
    assert drops["callable:short"] > 0


def test_a_filter_that_raises_names_itself_and_the_episode(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("def boom(row):\n    raise KeyError('nope')\n")
    with pytest.raises(FilterError, match=r"callable:boom.*raised on episode"):
        derive_sft(rows(), build_filters({"callable": f"{f}:boom"}), "auto")


def test_bad_filter_specs_are_refused_clearly(tmp_path):
    with pytest.raises(FilterError, match="unknown filter 'sucess'"):
        build_filters({"sucess": True})
    with pytest.raises(FilterError, match="module:function"):
        build_filters({"callable": "nocolon"})
    with pytest.raises(FilterError, match="file not found"):
        build_filters({"callable": f"{tmp_path}/missing.py:f"})
    with pytest.raises(FilterError, match="needs filters.tokenizer"):
        build_filters({"max_tokens": 10})


def test_token_length_filter_with_a_named_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rs = rows()
    all_rows, _ = derive_sft(rs, build_filters({}), "auto")
    lengths = sorted(len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
                     for r in all_rows)
    limit = lengths[len(lengths) // 2]
    out, drops = derive_sft(rs, build_filters({"max_tokens": limit, "tokenizer": tiny_model_dir}), "auto")
    assert 0 < len(out) < len(all_rows)
    assert drops["too_many_tokens_rows"] == len(all_rows) - len(out)


def test_the_filters_are_the_fields_of_filter_config():
    import dataclasses

    from agent_sft.config import FilterConfig
    from agent_sft.dataset.filters import FILTER_NAMES

    assert FILTER_NAMES == tuple(f.name for f in dataclasses.fields(FilterConfig))
    # a spec stored with every key (build, collect with filters set) means what the empty one means
    every = build_filters(dataclasses.asdict(FilterConfig()))
    assert [f.reason for f in every] == [f.reason for f in build_filters({})] == ["error"]
    assert [f.reason for f in build_filters({"drop_errors": False, "valid_only": True})] == ["invalid_action"]

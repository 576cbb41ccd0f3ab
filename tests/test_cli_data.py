import dataclasses
import json

import pytest
from fixtures_data import make_episode

from agent_sft.cli import main
from agent_sft.config import FilterConfig
from agent_sft.dataset.writer import DatasetWriter


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "ds"
    with DatasetWriter(d, fingerprint={"seed": 0}, meta={"env": {"env_name": "alfworld"}}) as w:
        for i in range(16):
            w.add(make_episode(i, success=i % 4 != 0, steps=3 + i % 4))
    return d


def test_info_prints_counts_success_by_type_and_drops(folder, capsys):
    assert main(["build", str(folder), "--require-success"]) == 0
    assert "dropped" in capsys.readouterr().out
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "episodes: 16" in out and "success: 12/16 (75.0%)" in out
    assert "pick_and_place_simple" in out and "not_success 4" in out and "require_success=True" in out
    assert main(["info", str(folder), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["drops"] == {"not_success": 4} and sum(st["episodes"].values()) == 16


def test_export_jsonl_one_chat_per_line(folder, tmp_path, capsys):
    out = tmp_path / "jsonl"
    assert main(["export", str(folder), "--format", "jsonl", "--out", str(out)]) == 0
    lines = (out / "train.jsonl").read_text().splitlines() + (out / "validation.jsonl").read_text().splitlines()
    assert len(lines) == sum(3 + i % 4 for i in range(16))
    row = json.loads(lines[0])
    assert row["messages"][-1]["role"] == "assistant" and "episode_id" in row


def test_merge_and_compact_from_the_command_line(folder, tmp_path, capsys):
    other = tmp_path / "other"
    with DatasetWriter(other, fingerprint={"seed": 0}) as w:
        for i in range(10, 20):
            w.add(make_episode(i, success=i % 4 != 0, steps=3 + i % 4))
    dest = tmp_path / "merged"
    assert main(["merge", str(dest), str(folder), str(other)]) == 0
    assert "20 episodes added, 6 duplicates skipped" in capsys.readouterr().out
    assert main(["info", str(dest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_episodes"] == 20
    assert main(["compact", str(dest)]) == 0


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    d = tmp_path / "ds"
    with DatasetWriter(d, fingerprint={}) as w:
        w.add(make_episode(0))
    assert main(["build", str(d), "--callable", "nocolon"]) == 2
    assert "module:function" in capsys.readouterr().err
    assert main(["build", str(d), "--max-tokens", "5"]) == 2
    assert "--tokenizer" in capsys.readouterr().err


# --- build: the filters and style of FilterConfig/OutputConfig, as dotted keys or flags ---------------

def build_parse(*argv):
    """`agent-sft build` arguments as parsed, and the build spec they ask for."""
    import argparse

    from agent_sft.cli import data

    p = argparse.ArgumentParser()
    data.add_arguments(p, "build")
    a = p.parse_intermixed_args(["ds", *argv])
    return data.build_spec(a).to_dict()


def built(folder):
    info = json.loads((folder / "meta" / "info.json").read_text())
    stats = json.loads((folder / "meta" / "stats.json").read_text())
    return {k: v for k, v in info["build"].items() if k != "generation"}, stats["drops"], stats["sft_rows"]


def test_build_takes_collects_dotted_keys_as_its_flags_do(folder):
    assert main(["build", str(folder), "--require-success", "--max-steps", "5", "--style", "episode"]) == 0
    by_flags = built(folder)
    assert main(["build", str(folder), "filters.require_success=true", "filters.max_steps=5",
                 "output.sft_style=episode"]) == 0
    assert built(folder) == by_flags
    # the spec `collect filters.require_success=true filters.max_steps=5 output.sft_style=episode` stores
    spec, drops, _ = by_flags
    assert spec == {"style": "episode", "filters": dict(sorted(
        dataclasses.asdict(FilterConfig(require_success=True, max_steps=5)).items()))}
    assert drops == {"not_success": 4, "too_many_steps": 4}


def test_build_without_flags_stores_every_filter_at_its_default():
    assert build_parse() == {"style": "auto", "filters": dict(sorted(dataclasses.asdict(FilterConfig()).items()))}
    assert build_parse("--keep-errors")["filters"]["drop_errors"] is False


SAMPLE = {"min_final_reward": 0.5, "min_steps": 2, "max_steps": 7, "max_tokens": 7, "tokenizer": "tok",
          "callable": "m.py:keep", "dedup": "near", "dedup_threshold": 0.8,
          "task_success": "mixed", "select": "first_success", "per_task": 2, "per_task_type": 3,
          "select_by": "length_ratio", "scores": ["invalid_rate<=0.2", "judge.rubric>=0.5"]}


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(FilterConfig)])
def test_every_filter_has_a_flag_that_sets_what_its_key_sets(name):
    from agent_sft.cli.data import build_keys, flag_of

    f = next(f for key, f, _ in build_keys() if key == f"filters.{name}")
    value = SAMPLE.get(name, not f.default)  # a bool's flag turns its default around
    extra = ["filters.tokenizer=tok"] if name == "max_tokens" else []
    flag = flag_of(f)
    if isinstance(value, list):  # a list's flag is given once per item
        by_flag = build_parse(*[a for v in value for a in (flag, v)])
        by_key = build_parse(f"filters.{name}=[{', '.join(value)}]")
        assert by_flag == by_key and by_key["filters"][name] == value
        return
    by_flag = build_parse(*([flag] if isinstance(value, bool) else [flag, str(value)]), *extra)
    by_key = build_parse(f"filters.{name}={str(value).lower() if isinstance(value, bool) else value}", *extra)
    assert by_flag == by_key and by_key["filters"][name] == value


def test_build_refuses_keys_it_does_not_take_naming_them(folder, capsys):
    assert main(["build", str(folder), "filters.require_sucess=true"]) == 2
    err = capsys.readouterr().err
    assert "'filters.require_sucess'" in err and "require_success" in err and "Traceback" not in err
    assert main(["build", str(folder), "env.max_steps=3"]) == 2
    assert "'env.max_steps' is not a key agent-sft build takes" in capsys.readouterr().err
    assert main(["build", str(folder), "filters.max_steps=many"]) == 2
    assert "filters.max_steps: expected int" in capsys.readouterr().err


def test_default_filters_spelled_out_or_left_out_are_the_same_build(tmp_path):
    from agent_sft.dataset.layout import BuildSpec, read_info

    d = tmp_path / "ds"
    with DatasetWriter(str(d), fingerprint={"a": 1}) as w:  # collect's spec with default filters: {}
        for i in range(4):
            w.add(make_episode(i))
    assert main(["build", str(d)]) == 0  # every filter at its default, spelled out
    gen = read_info(str(d))["build"]["generation"]
    with DatasetWriter(str(d), fingerprint={"a": 1}, build=BuildSpec("auto", {})) as w:
        w.add(make_episode(4))
    assert read_info(str(d))["build"]["generation"] == gen  # not derived again

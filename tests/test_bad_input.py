"""Bad input to the commands: a config file that is not YAML, a folder to write that is a file, a config
that does not match the folder's, a run whose episodes all fail the filters. Each is one line or a true
hint, never a traceback or advice that fails when followed."""

from __future__ import annotations

import contextlib
import io

import hang_env
import pytest

from agent_sft.cli import main


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _collect(folder, *more) -> list[str]:
    return ["collect", "--no-progress", f"env.env_name={hang_env.NAME}", "env.task_types=[ok]", "env.backend=thread",
            "env.num_episodes=2", "data.val_batch_size=2", f"output.dir={folder}", *more]


@pytest.fixture(scope="module")
def no_sft(tmp_path_factory):
    """A folder of 2 episodes (2 steps each) collected with filters.max_steps=1: no sft row, and the
    summary printed at the end of its collect."""
    folder = str(tmp_path_factory.mktemp("bad_input") / "ds")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(_collect(folder, "filters.max_steps=1")) == 0
    return folder, out.getvalue()


@pytest.mark.parametrize("text, where", [
    ("env:\n  num_episodes: 2\n  task_types: [a, b\ndata:\n  val_batch_size: 2\n",
     "at line 4, column 5: expected ',' or ']', but got ':' (while parsing a flow sequence that starts at line 3)"),
    ("env:\n  seed: 1\n env_name: x\n", "at line 3, column 2: expected <block end>"),
    ("env: {seed: 1\n", "at line 2, column 1: expected ',' or '}'"),
])
def test_yaml_syntax_error_in_the_config_file_is_one_line_naming_where(tmp_path, capsys, text, where):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main(["collect", "--config", str(path)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"agent-sft collect: error: config file {path}: YAML syntax error {where}"), line


def test_override_that_is_not_yaml_is_one_line(capsys):
    for argv, key in ((["collect", "env.seed=[1"], "env.seed"), (["collect", "env.mix=[a"], "env.mix")):
        assert main(argv) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert line == (f"agent-sft collect: error: {key}: cannot parse {argv[1].split('=')[1]!r}: YAML syntax error at "
                        "line 1, column 3: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)")


def test_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"env:\n  seed: \xff\xfe\n")
    assert main(["collect", "--config", str(path)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"agent-sft collect: error: config file {path} is not UTF-8 text"), line


def test_a_folder_to_write_that_is_a_file_is_one_line(no_sft, tmp_path, capsys):
    folder, _ = no_sft
    file = tmp_path / "taken"
    file.write_text("mine\n")
    cases = [
        (["export", folder, "--out", str(file)], f"agent-sft export: error: export folder {file} is a file"),
        (["export", folder, "--format", "jsonl", "--out", str(file / "sub")],
         f"agent-sft export: error: export folder {file / 'sub'} is inside the file {file}"),
        (["merge", str(file), folder], f"agent-sft merge: error: destination folder {file} is a file"),
        (["tiny-model", str(file)], f"agent-sft tiny-model: error: model folder {file} is a file"),
        # checked before any episode is played, not after the run
        (_collect(tmp_path / "other", f"output.export_dir={file}"),
         f"agent-sft collect: error: output.export_dir: export folder {file} is a file"),
        (_collect(file), f"agent-sft collect: error: output.dir: dataset folder {file} is a file"),
        (["info", str(file)], f"agent-sft info: error: {file}: a file, not a dataset folder"),
        (["repair", str(file)], f"agent-sft repair: error: {file}: a file, not a dataset folder"),
    ]
    for argv, start in cases:
        assert main(argv) == 2, argv
        (line,) = error_lines(capsys.readouterr().err)
        assert line.startswith(start), line
    assert file.read_text() == "mine\n"
    assert not (tmp_path / "other").exists()


def test_config_mismatch_says_how_to_continue_not_to_run_it_again(no_sft, capsys):
    folder, _ = no_sft
    assert main(_collect(folder, "filters.max_steps=1", "env.seed=7")) == 2
    err = capsys.readouterr().err
    assert "was collected with a different configuration" in err and "env.seed: 0 (folder) vs 7 (now)" in err
    assert "run the same command again" not in err and "Traceback" not in err
    assert err.rstrip().endswith(f"Nothing was played. To continue {folder} as it was collected, give the keys above "
                                 "the folder's values.")


def test_no_sft_rows_prints_what_loads_instead_of_a_failing_sft_line(no_sft):
    from datasets import load_dataset

    folder, out = no_sft
    assert "sft rows          train 0, validation 0" in out
    assert f'load_dataset("{folder}", "sft")' not in out
    assert (f"No sft rows: none of the 2 episodes passed the filters (dropped by filter: too_many_steps 2), so the "
            "folder has no sft config to load. The episodes are in raw:\n"
            f'  datasets.load_dataset("{folder}", "raw")\n'
            f"Derive sft again with other filters: agent-sft build {folder} filters.<key>=<value>") in out
    # what the summary says, checked: sft does not load, raw does
    with pytest.raises(ValueError, match="'sft' not found"):
        load_dataset(folder, "sft")
    assert sum(split.num_rows for split in load_dataset(folder, "raw").values()) == 2

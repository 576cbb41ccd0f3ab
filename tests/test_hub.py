"""`agent-sft push` against a loopback Hub: what lands in the repo, and what `load_dataset` gets back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from fixtures_data import make_episode
from fixtures_hub import ORG, OTHER, READ_ONLY_TOKEN, TOKEN, USER

SPLITS = ("train", "validation")
# Loads a pushed repo (argv[1], optional revision argv[3]) and the local folder (argv[2]) for comparison.
LOAD_BOTH = """
import json, sys
from datasets import load_dataset
rev = {"revision": sys.argv[3]} if len(sys.argv) > 3 else {}
remote = load_dataset(sys.argv[1], "sft", **rev)
local = load_dataset(sys.argv[2], "sft")
raw = load_dataset(sys.argv[1], "raw", **rev)
print(json.dumps({
    "remote": {s: remote[s].to_list() for s in remote},
    "local": {s: local[s].to_list() for s in local},
    "raw": {s: raw[s].num_rows for s in raw},
    "streamed": list(load_dataset(sys.argv[1], "sft", split="train", streaming=True, **rev)),
}))
"""
FILES = """
import json, sys
from huggingface_hub import HfApi
revisions = sys.argv[2:] or ["main"]
print(json.dumps([HfApi().list_repo_files(sys.argv[1], repo_type="dataset", revision=r) for r in revisions]))
"""


def _table(config: str, split: str, shard: int, n: int) -> pa.Table:
    ids = [f"{config}-{split}-{shard}-{i}" for i in range(n)]
    if config == "raw":
        return pa.table({"episode_id": ids, "reward": [float(i % 2) for i in range(n)], "steps": list(range(n))})
    messages = [
        [{"role": "user", "content": f"task {e}"}, {"role": "assistant", "content": f"<action>go {i}</action>"}]
        for i, e in enumerate(ids)
    ]
    return pa.table({"episode_id": ids, "messages": messages, "success": [i % 3 != 0 for i in range(n)]})


def _write_arrow(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def make_folder(root: Path, shards: dict[tuple[str, str], list[str]] | None = None, rows: int = 3) -> Path:
    """A dataset folder as the writer lays it out, with transient files that must never be uploaded."""
    shards = shards or {
        ("sft", "train"): ["a.arrow", "b.arrow"],
        ("sft", "validation"): ["a.arrow"],
        ("raw", "train"): ["a.arrow"],
        ("raw", "validation"): ["a.arrow"],
    }
    root.mkdir(parents=True, exist_ok=True)
    configs = []
    for config in ("sft", "raw"):
        data_files = []
        for split in SPLITS:
            paths = []
            for i, name in enumerate(shards[(config, split)]):
                paths.append(f"data/{config}/{split}/{name}")
                _write_arrow(root / paths[-1], _table(config, split, i + len(name), rows))
            data_files.append(f"  - split: {split}\n    path:\n" + "".join(f"    - {p}\n" for p in paths))
        default = "  default: true\n" if config == "sft" else ""
        configs.append(f"- config_name: {config}\n{default}  data_files:\n" + "".join(data_files))
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n\n# Agent trajectories\n")
    (root / "meta/plots").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps({"schema_version": 1, "episodes": rows * 4}))
    (root / "meta/stats.json").write_text(json.dumps({"success_rate": 0.5}))
    (root / "meta/plots/lengths.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / ".lock").write_text("1234")
    (root / "data/sft/train/.tmp-0003.arrow").write_bytes(b"partial shard")
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache/state.json").write_text("{}")
    return root


def snapshot(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def expected_files(root: Path) -> set[str]:
    return {p for p in snapshot(root) if not any(part.startswith(".") for part in p.split("/"))}


def test_push_then_load_dataset_from_hub_gives_the_local_rows(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    repo = hub.server.repo(repo_id)
    assert f"{hub.endpoint}/datasets/{repo_id}/commit/{repo.branches['main']}" in proc.stdout
    assert f'load_dataset("{repo_id}", "sft")' in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr

    assert set(repo.files("main")) == expected_files(folder) | {".gitattributes"}
    assert len(repo.commits) == 2  # the repo's creation, then everything in one commit
    for path in expected_files(folder):
        assert hub.server.read(repo, "main", path) == (folder / path).read_bytes()

    got = hub.python(LOAD_BOTH, repo_id, str(folder))
    assert got["remote"] == got["local"]
    assert got["streamed"] == got["local"]["train"]
    assert {s: len(r) for s, r in got["remote"].items()} == {"train": 6, "validation": 3}
    assert got["raw"] == {"train": 3, "validation": 3}


def test_writer_folder_round_trips_through_the_hub_across_resume_and_compaction(hub, tmp_path):
    from agent_sft.dataset.maintain import compact
    from agent_sft.dataset.writer import DatasetWriter

    folder = tmp_path / "alfworld-expert"
    meta = {"env": {"env_name": "alfworld", "data_path": str(tmp_path / "alfworld")}, "output": {"dir": str(folder)},
            "policy": {"type": "openai", "base_url": "http://10.1.2.3:8000/v1"}}
    with DatasetWriter(str(folder), meta=meta, flush_every_episodes=4) as writer:
        for i in range(8):
            writer.add(make_episode(i))
    repo_id = hub.new_repo_id()
    assert hub.cli("push", str(folder), repo_id).returncode == 0
    first = {p for p in hub.server.repo(repo_id).files("main") if not p.startswith("traces/")}  # the trace sample: test_sts.py
    assert first == expected_files(folder) | {".gitattributes"}
    card = hub.server.read(hub.server.repo(repo_id), "main", "README.md").decode()
    assert f'load_dataset("{repo_id}", "sft")' in card  # the pushed card's snippets name the repo
    assert "<user>/<dataset>" in (folder / "README.md").read_text()  # the local folder is left as it was
    info = hub.server.read(hub.server.repo(repo_id), "main", "meta/info.json").decode()
    assert str(tmp_path) not in info and "10.1.2.3" not in info  # no local paths or server addresses published
    assert str(tmp_path) in (folder / "meta/info.json").read_text()  # the local copy keeps them for resuming

    with DatasetWriter(str(folder), flush_every_episodes=4) as writer:  # resume: more episodes, new shards
        for i in range(8, 14):
            writer.add(make_episode(i))
    compact(str(folder))  # the shards pushed first are replaced by merged ones
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    files = {p for p in hub.python(FILES, repo_id)[0] if not p.startswith("traces/")}
    assert files == expected_files(folder) | {".gitattributes"}
    assert {p for p in first if p.startswith("data/")} - files  # old shards are gone from the repo
    got = hub.python(LOAD_BOTH, repo_id, str(folder))
    assert got["remote"] == got["local"]
    assert sum(got["raw"].values()) == 14


def test_push_refuses_a_card_naming_missing_files(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    (folder / "data/sft/train/b.arrow").unlink()
    proc = hub.cli("push", str(folder), hub.new_repo_id())
    assert proc.returncode == 2
    assert "lists data files that are not in the folder: data/sft/train/b.arrow" in proc.stderr


def test_push_without_token_says_how_to_log_in_and_uses_the_saved_login(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    proc = hub.cli("push", str(folder), repo_id, token=None)
    assert proc.returncode == 2
    assert "No Hugging Face token found" in proc.stderr
    assert "hf auth login" in proc.stderr and "HF_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("dataset", repo_id) not in hub.server.repos

    hub.home.mkdir(parents=True, exist_ok=True)
    (hub.home / "token").write_text(TOKEN)  # where `hf auth login` saves it
    proc = hub.cli("push", str(folder), repo_id, token=None)
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


def test_push_while_offline_says_to_unset_it(hub, tmp_path):
    proc = hub.cli("push", str(make_folder(tmp_path / "ds")), hub.new_repo_id(), env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "unset HF_HUB_OFFLINE" in proc.stderr


def test_push_with_rejected_token_is_a_clear_error(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    proc = hub.cli("push", str(folder), repo_id, token="hf_not_a_valid_token")
    assert proc.returncode == 2
    assert "token was rejected (401" in proc.stderr and "hf auth login" in proc.stderr
    assert "hf_not_a_valid_token" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert ("dataset", repo_id) not in hub.server.repos


def test_check_auth_names_the_problem(hub):
    mine, others = hub.new_repo_id(), hub.new_repo_id(namespace=OTHER)
    hub.server.create_repo(others)
    got = hub.python(
        """
import json, sys
from agent_sft.publish.hub import HubError, check_auth
out = {}
for name, repo, token in [("ok", sys.argv[1], None), ("org", sys.argv[3], None), ("bare", "plain-name", None),
                          ("theirs", sys.argv[2], None), ("read_only", sys.argv[1], sys.argv[4])]:
    try:
        out[name] = check_auth(repo, token=token)
    except HubError as e:
        out[name] = "HubError: " + str(e)
print(json.dumps(out))
""",
        mine, others, f"{ORG}/team-data", READ_ONLY_TOKEN,
    )
    assert got["ok"] == mine
    assert got["org"] == f"{ORG}/team-data"
    assert got["bare"] == f"{USER}/plain-name"
    assert got["theirs"].startswith("HubError") and others in got["theirs"] and "cannot write" in got["theirs"]
    assert got["read_only"].startswith("HubError") and "read-only" in got["read_only"]


def test_failed_upload_leaves_folder_untouched_and_retry_sends_only_the_rest(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    before = snapshot(folder)
    repo_id = hub.new_repo_id()
    lfs_files = [p for p in expected_files(folder) if p.endswith((".arrow", ".png"))]
    # The storage rejects the 2nd upload (an expired upload URL is not retried by the client).
    hub.server.fail("lfs-upload", nth=2, status=403)
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 2
    assert "failed while uploading files" in proc.stderr
    assert f"agent-sft push {folder} {repo_id}" in proc.stderr
    assert snapshot(folder) == before
    repo = hub.server.repo(repo_id)
    assert set(repo.files("main")) == {".gitattributes"}  # nothing half-committed
    first = sum(hub.server.uploaded(repo_id).values())
    assert 1 <= first < len(lfs_files)

    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(folder) == before
    uploaded = hub.server.uploaded(repo_id)
    assert sorted(uploaded.values()) == [1] * len(lfs_files)  # each file sent once over both attempts
    assert set(repo.files("main")) == expected_files(folder) | {".gitattributes"}


def test_transient_failures_are_retried_within_one_push(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    hub.server.fail("lfs-upload", nth=1, drop=True)  # connection cut mid-upload
    hub.server.fail("lfs-upload", nth=2, status=500)
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    assert hub.server.count("lfs-upload", repo_id, status=0) == 1
    assert set(hub.server.repo(repo_id).files("main")) == expected_files(folder) | {".gitattributes"}


def test_failed_commit_is_retried_without_reuploading(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    hub.server.fail("commit", nth=1, status=500)
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 2 and "failed while creating the commit" in proc.stderr
    uploads = sum(hub.server.uploaded(repo_id).values())
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 0, proc.stderr
    assert sum(hub.server.uploaded(repo_id).values()) == uploads
    assert set(hub.server.repo(repo_id).files("main")) == expected_files(folder) | {".gitattributes"}


def test_pushing_again_replaces_old_shards_and_keeps_other_files(hub, tmp_path):
    repo_id = hub.new_repo_id()
    repo = hub.server.create_repo(repo_id)
    hub.server.commit(repo, "main", {"notes/LICENSE.txt": b"CC-BY-4.0\n"}, title="add license")
    folder = make_folder(tmp_path / "ds")
    assert hub.cli("push", str(folder), repo_id).returncode == 0
    heads = len(repo.commits)
    assert hub.cli("push", str(folder), repo_id).returncode == 0
    assert len(repo.commits) == heads  # nothing changed: no empty commit
    lfs_files = [p for p in expected_files(folder) if p.endswith((".arrow", ".png"))]
    assert sum(hub.server.uploaded(repo_id).values()) == len(lfs_files)  # the second push sent nothing

    # Compaction replaced sft/train's two shards by one; the card now lists only that one.
    compacted = make_folder(tmp_path / "compacted", {
        ("sft", "train"): ["merged-0.arrow"],
        ("sft", "validation"): ["a.arrow"],
        ("raw", "train"): ["a.arrow"],
        ("raw", "validation"): ["a.arrow"],
    }, rows=5)
    proc = hub.cli("push", str(compacted), repo_id)
    assert proc.returncode == 0, proc.stderr
    files = set(hub.python(FILES, repo_id)[0])
    assert files == expected_files(compacted) | {".gitattributes", "notes/LICENSE.txt"}
    assert "data/sft/train/b.arrow" not in files


def test_a_commit_landing_during_the_push_is_not_overwritten(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    repo = hub.server.create_repo(repo_id)
    hub.server.on("preupload", lambda: hub.server.commit(repo, "main", {"notes/review.md": b"looks good"}))
    proc = hub.cli("push", str(folder), repo_id)
    assert proc.returncode == 2 and "the repo changed during the push" in proc.stderr
    assert set(repo.files("main")) == {".gitattributes", "notes/review.md"}
    assert hub.cli("push", str(folder), repo_id).returncode == 0
    assert set(repo.files("main")) == expected_files(folder) | {".gitattributes", "notes/review.md"}


def test_private_repo_is_created_private_and_needs_the_token(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    assert hub.cli("push", str(folder), repo_id, "--private").returncode == 0
    assert hub.server.repo(repo_id).private
    code = """
import json, sys
from datasets import load_dataset
try:
    load_dataset(sys.argv[1], "sft", token=False)
    anonymous = "loaded"
except Exception as e:
    anonymous = type(e).__name__
print(json.dumps([anonymous, load_dataset(sys.argv[1], "sft")["train"].num_rows]))
"""
    assert hub.python(code, repo_id) == ["DatasetNotFoundError", 6]


def test_private_push_to_an_existing_public_repo_is_refused(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    hub.server.create_repo(repo_id, private=False)
    proc = hub.cli("push", str(folder), repo_id, "--private")
    assert proc.returncode == 2 and "already exists and is public" in proc.stderr
    assert set(hub.server.repo(repo_id).files("main")) == {".gitattributes"}
    assert hub.server.uploaded(repo_id) == {}


def test_push_to_a_new_branch_leaves_main_alone(hub, tmp_path):
    folder = make_folder(tmp_path / "ds")
    repo_id = hub.new_repo_id()
    proc = hub.cli("push", str(folder), repo_id, "--revision", "v2")
    assert proc.returncode == 0, proc.stderr
    assert "revision='v2'" in proc.stdout
    main, v2 = hub.python(FILES, repo_id, "main", "v2")
    assert main == [".gitattributes"]
    assert set(v2) == expected_files(folder) | {".gitattributes"}


def test_push_refuses_a_folder_without_a_card(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = hub.cli("push", str(tmp_path / "empty"), hub.new_repo_id())
    assert proc.returncode == 2 and "no README.md" in proc.stderr


def test_snapshot_reads_every_form_of_data_files_and_skips_dotfiles(tmp_path):
    from agent_sft.publish.hub import HubError, snapshot

    folder = make_folder(tmp_path / "ds")
    card = "---\nconfigs:\n- config_name: sft\n  data_files: data/sft/*/*.arrow\n- config_name: raw\n  data_files:\n"
    raw = "    train: data/raw/train/a.arrow\n    validation: [data/raw/validation/a.arrow]\n"
    (folder / "README.md").write_text(card + raw + "---\n")
    text, files = snapshot(folder)
    assert text == (folder / "README.md").read_bytes()
    assert set(files) == expected_files(folder) and not any("/." in f or f.startswith(".") for f in files)

    (folder / "README.md").write_text(card + "    train: ./data/raw/train/gone.arrow\n---\n")
    with pytest.raises(HubError, match="not in the folder: ./data/raw/train/gone.arrow"):
        snapshot(folder)

"""Publish a dataset folder to the Hugging Face Hub in one commit.

    agent-sft push runs/alfworld-expert user/alfworld-expert

The folder goes up exactly as it loads locally: README.md (whose `configs:` name the data files),
`data/<config>/<split>/*`, `meta/`. Names starting with `.` (locks, partial shards) stay local. Beside them,
`traces/` holds a sample of the episodes as Hub trace-viewer sessions (`agent_sft.publish.sts`), written for
the upload only, never into the folder. Files are uploaded first and committed together, so the repo never
shows half a dataset, and a push that failed half-way can simply be run again: files the Hub already holds are
not sent twice.

`HF_ENDPOINT`, `HF_TOKEN` and the token saved by `hf auth login` are honored as huggingface_hub honors them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent_sft.errors import AgentSFTError

REPO_TYPE = "dataset"
LOGIN_HINT = "run `hf auth login` (or `huggingface-cli login`), or set HF_TOKEN to a token with write access"


class HubError(AgentSFTError):
    """A push that cannot start or did not finish; the message says what to do."""


PLACEHOLDER_REPO = "<user>/<dataset>"
TRACES = "traces"
"""The repo folder of the trace-viewer sessions (`agent_sft.publish.sts.FOLDER`)."""


def local_files(folder: str | os.PathLike) -> list[str]:
    """Paths (relative, `/`-separated) of the files a push uploads: everything but dotfiles, dot-folders and a
    `traces/` folder (the repo's `traces/` is the sample the push writes, not a local copy of it)."""
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (d != TRACES or Path(dirpath) != root))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.startswith(".") and path.is_file():
                out.append(path.relative_to(root).as_posix())
    return out


def snapshot(folder: str | os.PathLike) -> tuple[bytes, list[str]]:
    """The card and the file list of a folder, taken together under the writer's lock when there is one.

    Raises:
        HubError: no README.md, or a data file the README's `configs:` names is missing (the pushed
            dataset would not load).
    """
    import yaml

    from agent_sft.dataset import layout

    root = Path(folder)
    if not (root / "README.md").is_file():
        raise HubError(f"{root} is not a dataset folder (no README.md); write one with `agent-sft collect` first.")
    # Shards are sealed before the card lists them, so a card read before the listing names only files
    # the listing holds; the lock (taken only if the writer made one) keeps compaction out meanwhile.
    lock = layout.locked(str(root)) if (root / layout.LOCK).exists() else contextlib.nullcontext()
    with lock:
        card = (root / "README.md").read_bytes()
        files = local_files(root)
    match = re.match(rb"^---\s*\n(.*?)\n---\s*(\n|$)", card, re.S)
    try:
        meta = yaml.safe_load(match[1]) if match else {}
    except yaml.YAMLError as e:
        raise HubError(f"{root / 'README.md'}: the YAML front matter does not parse: {e}") from None
    configs = (meta.get("configs") if isinstance(meta, dict) else None) or []
    named = [p for c in configs if isinstance(c, dict) for p in _card_paths(c.get("data_files"))]
    have = set(files)
    missing = [p for p in named if not any(c in p for c in "*?[") and p.removeprefix("./") not in have]
    if missing:
        raise HubError(
            f"{root / 'README.md'} lists data files that are not in the folder: {', '.join(missing[:5])}. "
            f"Finish or repair the folder first (`agent-sft compact {root}` rewrites the card)."
        )
    return card, files


def check_auth(repo_id: str, token: str | None = None) -> str:
    """Check that we can push to `repo_id` before spending time on a collection.

    Args:
        repo_id: `namespace/name`, or a bare name for the token owner's namespace.
        token: a token; defaults to huggingface_hub's lookup (HF_TOKEN, then the saved login).

    Returns:
        The full repo id (`namespace/name`).

    Raises:
        HubError: no token, a rejected token, a read-only token, a namespace we cannot write to, or an
            unreachable Hub.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE is set, so the Hub cannot be reached: `unset HF_HUB_OFFLINE` to push.")
    token = token or get_token()
    if not token:
        raise HubError(f"No Hugging Face token found: {LOGIN_HINT}.")
    api = HfApi(token=token)
    try:
        me = api.whoami(token=token)
    except HfHubHTTPError as e:
        if _status(e) == 401:
            rejected = f"The Hugging Face token was rejected (401 Unauthorized) by {api.endpoint}: {LOGIN_HINT}."
            raise HubError(rejected) from None
        raise HubError(f"Could not check the token with {api.endpoint}: {_reason(e)}") from None
    except HubError:
        raise
    except Exception as e:
        raise HubError(f"Could not reach the Hub at {api.endpoint}: {_reason(e)}") from None
    user = me.get("name", "")
    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"
    namespaces = {user, *(org.get("name") for org in me.get("orgs") or [])}
    access = (me.get("auth") or {}).get("accessToken") or {}
    if access.get("role") == "read":
        raise HubError(f"The Hugging Face token of {user!r} is read-only; pushing to {repo_id} needs write access: "
                       f"{LOGIN_HINT}.")
    try:
        api.auth_check(repo_id, repo_type=REPO_TYPE, token=token, write=True)
    except RepositoryNotFoundError:
        if repo_id.split("/")[0] not in namespaces:
            raise HubError(
                f"{user!r} cannot create {repo_id}: {repo_id.split('/')[0]!r} is neither the user nor one of their "
                f"organizations ({', '.join(sorted(namespaces))}). Push to a namespace you own."
            ) from None
    except HfHubHTTPError as e:
        if _status(e) in (401, 403):
            raise HubError(f"{user!r} cannot write to the dataset repo {repo_id} ({_status(e)}): use a repo you own, "
                           f"or {LOGIN_HINT}.") from None
        raise HubError(f"Could not check write access to {repo_id}: {_reason(e)}") from None
    return repo_id


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    traces: str | int = "auto",
) -> str:
    """Upload a dataset folder to a Hub dataset repo in a single commit.

    The repo is created if missing (private if asked), and the branch `revision` too. Files already in the
    repo outside `data/` and `traces/` are kept; `data/` files the folder no longer has (shards replaced by
    compaction, an earlier push's layout) and `traces/` files this push's sample leaves out are deleted in the
    same commit, so the repo holds exactly the folder's data and one sample of its episodes.

    Args:
        folder: the dataset folder (with README.md).
        repo_id: `namespace/name` of the dataset repo, or a bare name for the token owner's namespace.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to; created from `main` if it does not exist. Default `main`.
        token: a token; defaults to huggingface_hub's lookup (HF_TOKEN, then the saved login).
        commit_message: defaults to "Upload dataset with agent-sft".
        traces: the episodes written under `traces/` for the Hub's trace viewer: `auto` (a few per env and
            outcome), `all`, `none` or a number (`agent_sft.config.load.parse_traces`); the same folder gives the
            same files. The card gets a section on them.

    Returns:
        The URL of the commit.

    Raises:
        HubError: nothing to push, no usable token, or an upload that failed (the local folder is never
            modified; running the same push again sends only what the Hub does not have yet).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    card, files = snapshot(folder)
    repo_id = check_auth(repo_id, token)
    # The card's load snippets name the repo they are read from (the local card says <user>/<dataset>).
    card = card.replace(PLACEHOLDER_REPO.encode(), repo_id.encode())
    api = HfApi(token=token)
    options = [*(["--private"] if private else []), *(["--revision", revision] if revision else []),
               *(["--traces", str(traces)] if traces != "auto" else [])]
    retry = shlex.join(["agent-sft", "push", str(folder), repo_id, *options])
    step = "creating the repo"
    with _sample(folder, traces) as (tmp, sessions):
        if sessions:
            link = f"{api.endpoint}/datasets/{repo_id}/tree/{revision or 'main'}/{TRACES}"
            card = card.rstrip(b"\n") + b"\n" + _traces_section(len(sessions), traces, link).encode()
        uploads = {**{p: str(folder / p) for p in files}, **{f"{TRACES}/{p}": os.path.join(tmp, p) for p in sessions}}
        try:
            api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            if private and not api.repo_info(repo_id, repo_type=REPO_TYPE).private:
                raise HubError(
                    f"{repo_id} already exists and is public, so --private would not keep this data private. Make the "
                    f"repo private first (its settings page on the Hub, or `hf repos settings {repo_id} --private "
                    f"--repo-type dataset`), or push without --private."
                )
            if revision and revision != "main":
                step = f"creating the branch {revision!r}"
                api.create_branch(repo_id, repo_type=REPO_TYPE, branch=revision, exist_ok=True)
            step = "listing the files already in the repo"
            # The commit names this head as its parent: if another push lands meanwhile, ours is refused
            # instead of deleting or duplicating files against a listing that is out of date.
            head = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
            remote = api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=head)
            stale = sorted(p for p in remote if p.startswith(("data/", f"{TRACES}/")) and p not in uploads)
            content = {"README.md": card, **_public_meta(folder, files)}
            additions = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=content.get(p, local)) for p, local in uploads.items()]
            # Upload every file first; the commit below only references them. A failure here leaves the
            # repo unchanged, and the next attempt skips what the Hub already stored.
            step = "uploading files"
            api.preupload_lfs_files(repo_id, additions, repo_type=REPO_TYPE, revision=revision, free_memory=False)
            step = "creating the commit"
            info = api.create_commit(
                repo_id,
                [*additions, *(CommitOperationDelete(path_in_repo=p) for p in stale)],
                commit_message=commit_message or "Upload dataset with agent-sft",
                repo_type=REPO_TYPE,
                revision=revision,
                parent_commit=head,
            )
        except HubError:
            raise
        except Exception as e:
            if _status(e) == 412:
                step += " (the repo changed during the push, probably another push)"
            raise HubError(
                f"Pushing {folder} to {repo_id} failed while {step}: {_reason(e)}\n"
                f"The local folder is unchanged. Run `{retry}` again to finish: files already uploaded are not sent again."
            ) from None
    return info.commit_url


@contextlib.contextmanager
def _sample(folder: Path, traces: str | int) -> Iterator[tuple[str, list[str]]]:
    """(the folder the sample's STS files are written in, their paths there), for the upload only.

    The files go in a folder of their own beside the dataset folder, on its disk (the system temp is often held
    in memory), removed on the way out however the push ends.

    Raises:
        HubError: the raw shards could not be read, or the files could not be written (a full disk).
    """
    if traces == "none":
        yield "", []
        return
    where = folder.resolve()
    try:
        tmp = tempfile.mkdtemp(prefix=f".{where.name}.traces-", dir=where.parent)
    except OSError as e:
        raise HubError(f"Pushing {folder} stopped before anything was sent: no folder for the {TRACES}/ sample could "
                       f"be made in {where.parent}: {e.strerror or e}; push with --traces none to send none") from None
    try:
        yield tmp, _write_traces(folder, tmp, traces)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_traces(folder: Path, out: str, traces: str | int) -> list[str]:
    """The sample's STS files written under `out`: their paths there (none for a folder that has no agent-sft
    episodes to show).

    Raises:
        HubError: the raw shards could not be read, or the files could not be written.
    """
    from agent_sft.errors import DatasetError, NotADatasetError
    from agent_sft.publish.sts import write_traces

    try:
        write_traces(str(folder), out, traces)
    except NotADatasetError:
        return []
    except DatasetError as e:
        raise HubError(f"Pushing {folder} stopped before anything was sent: the episodes for {TRACES}/ could not be "
                       f"read: {e}") from None
    except OSError as e:
        raise HubError(f"Pushing {folder} stopped before anything was sent: the {TRACES}/ sample could not be written "
                       f"in {out}: {e.strerror or e}; free some space, or push with --traces none to send none") from None
    return sorted(Path(dirpath, name).relative_to(out).as_posix() for dirpath, _, names in os.walk(out) for name in names)


def _traces_section(sessions: int, traces: str | int, link: str) -> str:
    from agent_sft.dataset.card import traces_section

    chosen = {"auto": "a few per env and outcome", "all": "every episode"}.get(str(traces), "spread over envs and outcomes")
    return traces_section(sessions, chosen + ", chosen by the run seed" if traces != "all" else chosen, link)


def _public_meta(folder: Path, files: list[str]) -> dict[str, bytes]:
    """meta/info.json as published: the run config without local paths or server addresses."""
    if "meta/info.json" not in files:
        return {}
    from agent_sft.dataset.public import public_info

    try:
        info = json.loads((folder / "meta/info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    published = public_info(info)
    if published == info:
        return {}  # nothing to hide: upload the file as it is
    return {"meta/info.json": json.dumps(published, indent=2, sort_keys=True, default=str).encode()}


def _card_paths(data_files) -> list[str]:
    """The paths in a card config's `data_files`, in any of its YAML forms (str, list, {split, path} list)."""
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return _card_paths(data_files.get("path", list(data_files.values())))
    if isinstance(data_files, list):
        return [p for item in data_files for p in _card_paths(item)]
    return []


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _reason(error: BaseException) -> str:
    """One line naming the cause, following chained errors (`RuntimeError` wraps the failing upload)."""
    parts = []
    while error is not None and len(parts) < 3:
        text = str(error).strip().splitlines()
        parts.append(f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))
        error = error.__cause__ or error.__context__
    return " <- ".join(parts)

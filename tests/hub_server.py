"""A loopback server speaking the part of the Hugging Face Hub HTTP API that huggingface_hub and datasets use.

Repos live in memory with real commits (a sha per commit, branches, any commit sha usable as a revision),
regular files sent inline in commits and large files through the LFS batch / upload / verify protocol.
Point a client at it with `HF_ENDPOINT=server.endpoint` and `HF_HUB_DISABLE_XET=1`, both set before
huggingface_hub is imported.

Fault injection: `server.fail("lfs-upload", nth=2, status=500)` answers the 2nd upload with a 500;
`drop=True` reads part of the request body and closes the connection without an answer.
Every request is recorded in `server.requests` as `(endpoint, repo_id, status)`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
LFS_SUFFIXES = (".arrow", ".parquet", ".png", ".jpg", ".bin", ".safetensors", ".gz", ".zip", ".tar")
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)
_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/_lfs/(model|dataset|space)/([^/]+/[^/]+)/([0-9a-f]{64})(/verify)?$")


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclasses.dataclass(frozen=True)
class Entry:
    """A file in a commit: its git blob id, size, and sha256 when stored through LFS."""

    oid: str
    size: int
    sha256: str | None = None


@dataclasses.dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, Entry]
    title: str
    date: str


@dataclasses.dataclass
class Repo:
    type: str
    id: str
    private: bool
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    lfs: dict[str, bytes] = dataclasses.field(default_factory=dict)  # sha256 -> content (uploaded, maybe uncommitted)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        sha = self.branches.get(revision.removeprefix("refs/heads/"))
        if sha is None and len(revision) >= 7:
            sha = next((s for s in self.commits if s.startswith(revision)), None)
        return self.commits.get(sha) if sha else None

    def files(self, revision: str = "main") -> dict[str, Entry]:
        commit = self.resolve(revision)
        return dict(commit.files) if commit else {}


@dataclasses.dataclass
class Fault:
    endpoint: str
    nth: int
    times: int
    status: int
    drop: bool
    run: Callable[[], None] | None = None  # instead of failing: run this, then answer normally
    seen: int = 0


class HubError(Exception):
    """An error answer: status, message, and the `X-Error-Code` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.endpoint = f"http://{host}:{self.server_address[1]}"
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git blob sha -> content of regular files
        self.users: dict[str, dict] = {}  # token -> {"name", "orgs", "role"}
        self.requests: list[tuple[str, str | None, int]] = []
        self.faults: list[Fault] = []
        self.uploads: list[tuple[str, str]] = []  # (repo_id, sha256) of each completed LFS upload
        self.lock = threading.RLock()
        self._thread: threading.Thread | None = None

    # ---- control from tests ----
    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def add_user(self, name: str, token: str, *, orgs: tuple[str, ...] = (), role: str = "write") -> None:
        self.users[token] = {"name": name, "orgs": list(orgs), "role": role}

    def fail(self, endpoint: str, *, nth: int = 1, times: int = 1, status: int = 500, drop: bool = False) -> None:
        """Answer requests `nth` .. `nth + times - 1` to `endpoint` (counted from now) with `status`, or drop them."""
        with self.lock:
            self.faults.append(Fault(endpoint, nth, times, status, drop))

    def on(self, endpoint: str, run: Callable[[], None], *, nth: int = 1) -> None:
        """Run `run()` just before answering the `nth` request to `endpoint` (e.g. a concurrent commit)."""
        with self.lock:
            self.faults.append(Fault(endpoint, nth, 1, 0, False, run))

    def reset_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def count(self, endpoint: str, repo_id: str | None = None, status: int | None = 200) -> int:
        return sum(
            1
            for e, r, s in list(self.requests)
            if e == endpoint and (repo_id is None or r == repo_id) and (status is None or s == status)
        )

    def uploaded(self, repo_id: str) -> Counter:
        """How many times each LFS object (by sha256) of `repo_id` was uploaded completely."""
        return Counter(oid for rid, oid in list(self.uploads) if rid == repo_id)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_type, repo_id, private)
            self.repos[(repo_type, repo_id)] = repo
            self.commit(repo, "main", {".gitattributes": GITATTRIBUTES}, title="initial commit")
            return repo

    def commit(self, repo: Repo, branch: str, add: dict[str, bytes], title: str = "update") -> Commit:
        """Commit regular files straight into a branch (to seed a repo in tests)."""
        with self.lock:
            files = repo.files(branch)
            for path, data in add.items():
                oid = git_blob_sha(data)
                self.blobs[oid] = data
                files[path] = Entry(oid, len(data))
            return self._new_commit(repo, branch, files, title)

    def read(self, repo: Repo, revision: str, path: str) -> bytes:
        entry = repo.files(revision)[path]
        return repo.lfs[entry.sha256] if entry.sha256 else self.blobs[entry.oid]

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, Entry], title: str) -> Commit:
        parent = repo.branches.get(branch)
        listing = "\n".join(f"{p} {e.oid}" for p, e in sorted(files.items()))
        sha = hashlib.sha1(f"{parent}\n{title}\n{time.time_ns()}\n{listing}".encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        repo.commits[sha] = Commit(sha, parent, files, title, date)
        repo.branches[branch] = sha
        return repo.commits[sha]

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            hit = None
            for fault in self.faults:
                if fault.endpoint == endpoint:
                    fault.seen += 1
                    if hit is None and fault.nth <= fault.seen < fault.nth + fault.times:
                        hit = fault
            return hit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # ---- plumbing ----
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        endpoint, route, args = self._route(method, url.path)
        repo_id = next((a for a in args if isinstance(a, str) and "/" in a), None)
        fault = self.server._take_fault(endpoint)
        if fault and fault.drop:
            self._drop()
            self.server.requests.append((endpoint, repo_id, 0))
            return
        try:
            self.body = self._read_body()
            if fault and fault.run:
                fault.run()
            elif fault:
                raise HubError(fault.status, f"injected failure of {endpoint}")
            if route is None:
                raise HubError(404, f"no route for {method} {url.path}")
            with self.server.lock:
                status, headers, payload = route(*args)
        except HubError as e:
            status, payload = e.status, {"error": e.message}
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
        self.server.requests.append((endpoint, repo_id, status))
        self._send(status, headers, payload, head=method == "HEAD")

    def _route(self, method: str, path: str):
        if path == "/api/whoami-v2" and method == "GET":
            return "whoami", self._whoami, ()
        if path == "/api/repos/create" and method == "POST":
            return "create", self._create, ()
        if path == "/api/validate-yaml" and method == "POST":
            return "validate-yaml", self._validate_yaml, ()
        if (m := _LFS_OBJECT.match(path)) and method == ("POST" if m[4] else "PUT"):
            kind = "lfs-verify" if m[4] else "lfs-upload"
            return kind, (self._lfs_verify if m[4] else self._lfs_upload), (m[1], m[2], m[3])
        if (m := _LFS_BATCH.match(path)) and method == "POST":
            return "lfs-batch", self._lfs_batch, (TYPES.get(m[1] or "models"), m[2])
        if m := _API.match(path):
            repo_type, repo_id = TYPES[m[1]], m[2]
            parts = [unquote(p) for p in (m[3] or "").split("/")] if m[3] else []
            action = parts[0] if parts else ""
            rev = parts[1] if len(parts) > 1 else "main"
            rest = "/".join(parts[2:])
            table = {
                ("GET", ""): ("info", self._info, (repo_type, repo_id, "main")),
                ("GET", "revision"): ("info", self._info, (repo_type, repo_id, rev)),
                ("GET", "tree"): ("tree", self._tree, (repo_type, repo_id, rev, rest)),
                ("POST", "paths-info"): ("paths-info", self._paths_info, (repo_type, repo_id, rev)),
                ("POST", "preupload"): ("preupload", self._preupload, (repo_type, repo_id, rev)),
                ("POST", "commit"): ("commit", self._commit, (repo_type, repo_id, rev)),
                ("POST", "branch"): ("branch", self._branch, (repo_type, repo_id, rev)),
                ("GET", "refs"): ("refs", self._refs, (repo_type, repo_id)),
                ("GET", "auth-check"): ("auth-check", self._auth_check, (repo_type, repo_id, rev == "write")),
            }
            if (method, action) in table:
                return table[(method, action)]
            return f"api-{action}", None, (repo_id,)
        if (m := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            return "resolve", self._resolve, (TYPES.get(m[1] or "models"), m[2], m[3], unquote(m[4]))
        return "unknown", None, ()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _drop(self) -> None:
        """Read part of the request body, then close the connection without answering."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(max(1, length // 2))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, headers: dict, payload, head: bool = False) -> None:
        if isinstance(payload, (bytes, bytearray)):
            body = bytes(payload)
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            body = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # ---- auth ----
    def _user(self) -> dict | None:
        """The user of the bearer token; a token the server does not know is a 401, as on the Hub."""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        user = self.server.users.get(auth[7:].strip())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _get_repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._user()
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not _owns(user, repo_id)):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and (user is None or not _owns(user, repo_id) or user["role"] == "read"):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---- endpoints ----
    def _whoami(self):
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": o, "roleInOrg": "write"} for o in user["orgs"]]
        access = {"displayName": "test token", "role": user["role"]}
        info = {"type": "user", "id": user["name"], "name": user["name"], "fullname": user["name"], "orgs": orgs}
        return 200, {}, {**info, "auth": {"type": "access_token", "accessToken": access}}

    def _create(self):
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        req = json.loads(self.body or b"{}")
        repo_type = req.get("type") or "model"
        repo_id = f"{req.get('organization') or user['name']}/{req['name']}"
        url = f"{self.server.endpoint}/{PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.server.repos:
            return 409, {}, {"error": f"You already created this {repo_type} repo", "url": url}
        if not _owns(user, repo_id) or user["role"] == "read":
            raise HubError(403, f"You don't have the rights to create a {repo_type} under this namespace")
        private = req.get("visibility", "private" if req.get("private") else "public") != "public"
        self.server.create_repo(repo_id, repo_type, private=private)
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def _validate_yaml(self):
        content = json.loads(self.body or b"{}").get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        try:
            meta = yaml.safe_load(match[1]) if match else {}
        except yaml.YAMLError as e:
            return 400, {}, {"errors": [{"message": f"Invalid YAML: {e}"}]}
        if meta is not None and not isinstance(meta, dict):
            return 400, {}, {"errors": [{"message": "metadata must be a mapping"}]}
        return 200, {}, {"warnings": []}

    def _info(self, repo_type, repo_id, revision):
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_of(repo, revision)
        card = {}
        if "README.md" in commit.files:
            text = self.server.read(repo, commit.sha, "README.md").decode()
            if m := re.match(r"^---\s*\n(.*?)\n---", text, re.S):
                card = yaml.safe_load(m[1]) or {}
        return 200, {}, {
            "id": repo_id,
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "lastModified": commit.date,
            "createdAt": commit.date,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "cardData": card,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }

    def _tree(self, repo_type, repo_id, revision, folder):
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_of(repo, revision)
        folder = folder.strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = _entries(commit.files)
        if folder and entries.get(folder, {}).get("type") != "directory":
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        prefix = f"{folder}/" if folder else ""
        out = [
            e
            for p, e in sorted(entries.items())
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        return 200, {}, out

    def _paths_info(self, repo_type, repo_id, revision):
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_of(repo, revision)
        form = parse_qs(self.body.decode())
        entries = _entries(commit.files)
        return 200, {}, [entries[p.strip("/")] for p in form.get("paths", []) if p.strip("/") in entries]

    def _refs(self, repo_type, repo_id):
        repo = self._get_repo(repo_type, repo_id)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()]
        return 200, {}, {"branches": branches, "tags": [], "converts": []}

    def _auth_check(self, repo_type, repo_id, write):
        self._get_repo(repo_type, repo_id, write=write)
        return 200, {}, {}

    def _branch(self, repo_type, repo_id, branch):
        repo = self._get_repo(repo_type, repo_id, write=True)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit_of(repo, start).sha
        return 200, {}, {}

    def _preupload(self, repo_type, repo_id, revision):
        repo = self._get_repo(repo_type, repo_id, write=True)
        current = self._commit_of(repo, revision).files
        out = []
        for f in json.loads(self.body)["files"]:
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000 or b"\0" in sample
            entry = current.get(f["path"])
            remote = (entry.sha256 if lfs else entry.oid) if entry else None
            mode = "lfs" if lfs else "regular"
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote})
        return 200, {}, {"files": out, "commitOid": self._commit_of(repo, revision).sha}

    def _lfs_batch(self, repo_type, repo_id):
        repo = self._get_repo(repo_type, repo_id, write=True)
        req = json.loads(self.body)
        objects = []
        for obj in req["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in repo.lfs:  # already stored objects need no upload: a retry sends only what is missing
                href = f"{self.server.endpoint}/_lfs/{repo_type}/{repo_id}/{obj['oid']}"
                item["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append(item)
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, {"transfer": "basic", "objects": objects}

    def _lfs_upload(self, repo_type, repo_id, oid):
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "no such upload target")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "content does not match its sha256")
        repo.lfs[oid] = self.body
        self.server.uploads.append((repo_id, oid))
        return 200, {"ETag": f'"{oid}"'}, b""

    def _lfs_verify(self, repo_type, repo_id, oid):
        repo = self._get_repo(repo_type, repo_id, write=True)
        req = json.loads(self.body)
        if oid not in repo.lfs or len(repo.lfs[oid]) != req.get("size"):
            raise HubError(404, f"object {oid} was not uploaded")
        return 200, {}, {"success": True}

    def _commit(self, repo_type, repo_id, revision):
        repo = self._get_repo(repo_type, repo_id, write=True)
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files = repo.files(branch)
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        header = next((ln["value"] for ln in lines if ln["key"] == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != repo.branches[branch]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        blobs = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                blobs[git_blob_sha(data)] = data
                files[value["path"]] = Entry(git_blob_sha(data), len(data))
            elif key == "lfsFile":
                if value["oid"] not in repo.lfs:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                size = len(repo.lfs[value["oid"]])
                files[value["path"]] = Entry(git_blob_sha(lfs_pointer(value["oid"], size)), size, value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
        self.server.blobs.update(blobs)
        commit = self.server._new_commit(repo, branch, files, header.get("summary", "update"))
        url = f"{self.server.endpoint}/{PREFIX[repo_type]}{repo_id}/commit/{commit.sha}"
        return 200, {}, {"success": True, "commitOid": commit.sha, "commitUrl": url, "pullRequestUrl": None}

    def _resolve(self, repo_type, repo_id, revision, path):
        repo = self._get_repo(repo_type, repo_id)
        commit = self._commit_of(repo, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self.server.read(repo, commit.sha, path)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.sha256 or entry.oid}"', "Accept-Ranges": "bytes"}
        if entry.sha256:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": entry.size})
        status = 200
        if m := re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", "")):
            start = int(m[1]) if m[1] else max(0, len(data) - int(m[2] or 0))
            end = int(m[2]) if m[1] and m[2] else len(data) - 1
            if start >= len(data):
                raise HubError(416, "Requested range not satisfiable")
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return status, headers, data


def _owns(user: dict | None, repo_id: str) -> bool:
    return user is not None and repo_id.split("/")[0] in (user["name"], *user["orgs"])


def _entries(files: dict[str, Entry]) -> dict[str, dict]:
    """Tree entries (files and the folders they imply) of a commit, keyed by path."""
    out: dict[str, dict] = {}
    for path, e in files.items():
        item = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.sha256:
            item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        out[path] = item
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            oid = hashlib.sha1(folder.encode()).hexdigest()
            out.setdefault(folder, {"type": "directory", "oid": oid, "size": 0, "path": folder})
    return out


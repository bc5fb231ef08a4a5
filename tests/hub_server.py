"""A loopback fake of the Hugging Face Hub HTTP API, for tests.

It answers exactly the requests huggingface_hub makes for `repo_info(files_metadata=True)`,
`hf_hub_download` (HEAD + GET on /resolve), `create_repo`, `create_branch` and
`create_commit` (validate-yaml, preupload, LFS batch "basic" transfer, ndjson commit),
with the Hub's headers (X-Repo-Commit, ETag / X-Linked-Etag / X-Linked-Size) and error
codes (X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Files whose
names end like the Hub's default .gitattributes LFS patterns are stored as LFS objects
(etag = sha256), the others as git blobs (etag = git sha1). Xet is not implemented: tests
set HF_HUB_DISABLE_XET=1 so uploads take the LFS path.

Faults for tests: `fault(path, "corrupt")` serves the file with one byte flipped;
`fault(path, "stall")` sends half the file and waits until `release()` (or stop).
A hostile Hub, for the hardening tests: `tamper["info_sha"]` is the commit id repo_info and
the tree answer; `tamper["commit_header"]` the X-Repo-Commit of every file answer;
`tamper["etag"]` its ETag / X-Linked-Etag; `tamper["extra_files"]` ({path: bytes}) adds
files to every listing (names such as `dnas/../../x.h5` included).
Bound to 127.0.0.1 on a free port; `requests` logs (method, path) of every request.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".h5", ".npz", ".npy", ".bin", ".pt", ".pth", ".safetensors", ".zip", ".parquet", ".pkl")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"([A-Za-z0-9][\w.-]*/[\w.-]+?)"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) and len(data) > 0


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    gated: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: content}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """The Hub's state (repos, LFS objects, tokens) and the HTTP server that serves it."""

    def __init__(self, tokens: dict[str, set[str]] | None = None):
        # token -> permissions: "read", "write", "gated" (granted access to gated repos)
        self.tokens = tokens if tokens is not None else {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.tamper: dict[str, object] = {}
        self.requests: list[tuple[str, str]] = []
        self.stalled = threading.Event()
        self._release = threading.Event()
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, repo_type: str = "dataset",
                 private: bool = False, gated: bool = False) -> str:
        """Create a repo (with the Hub's initial .gitattributes) and commit `files` on main; return the commit."""
        with self.lock:
            repo = Repo(repo_type, repo_id, private, gated)
            self.repos[(repo_type, repo_id)] = repo
            first = self._new_commit(repo, "main", {".gitattributes": GITATTRIBUTES})
            return self.commit(repo_id, files, repo_type=repo_type) if files else first

    def commit(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset", branch: str = "main",
               delete: tuple[str, ...] = ()) -> str:
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            tree = dict(repo.commits[repo.branches[branch]])
            for p in delete:
                tree.pop(p, None)
            tree.update(files)
            return self._new_commit(repo, branch, tree, replace=True)

    def _new_commit(self, repo: Repo, branch: str, tree: dict[str, bytes], replace: bool = False) -> str:
        sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        base = {} if replace or branch not in repo.branches else repo.commits[repo.branches[branch]]
        repo.commits[sha] = {**base, **tree}
        repo.branches[branch] = sha
        for p, data in tree.items():
            if is_lfs(p, data):
                self.lfs[hashlib.sha256(data).hexdigest()] = data
        return sha

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            return dict(repo.commits[repo.resolve(revision)])

    def head(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> str:
        return self.repos[(repo_type, repo_id)].branches[branch]

    def fault(self, path_in_repo: str, kind: str | None) -> None:
        """Make GET of this file misbehave: "corrupt", "stall" or None (healthy again)."""
        if kind is None:
            self.faults.pop(path_in_repo, None)
        else:
            self.faults[path_in_repo] = kind

    def release(self) -> None:
        self._release.set()

    # -- server ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1"

    def log_message(self, *args):  # keep test output clean
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _perms(self) -> set[str]:
        return self.hub.tokens.get(self._token() or "", set())

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self.hub.lock:
            self.hub.requests.append((method, path))
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            for pattern, meth, fn in _ROUTES:
                m = re.match(pattern, path)
                if m and meth == method:
                    return fn(self, m, query, body)
            raise _HubError(404, f"no route for {method} {path}")
        except _HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, json.dumps({"error": e.message}).encode(),
                       {"Content-Type": "application/json", **headers}, head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- access -----------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        perms = self._perms()
        if repo is None or (repo.private and not perms):
            raise _HubError(401 if not perms else 404, "Repository not found", "RepoNotFound")
        if write:
            self._need_write()
        return repo

    def _need_write(self) -> None:
        perms = self._perms()
        if not perms:
            raise _HubError(401, "Invalid username or password.")
        if "write" not in perms:
            raise _HubError(403, "You don't have the rights to write to this repo")

    def _check_gate(self, repo: Repo) -> None:
        if repo.gated and "gated" not in self._perms():
            status = 403 if self._perms() else 401
            raise _HubError(status, f"Access to dataset {repo.repo_id} is restricted", "GatedRepo")

    def _commit_of(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    # -- read endpoints -----------------------------------------------------------------------
    def info(self, m, query, body):
        repo = self._repo(TYPES[m.group(1)], m.group(2))
        sha = self._commit_of(repo, m.group(3) or "main")
        blobs = (query.get("blobs") or ["false"])[0].lower() in ("1", "true")
        siblings = []
        for p, data in sorted({**repo.commits[sha], **self.hub.tamper.get("extra_files", {})}.items()):
            s = {"rfilename": p}
            if blobs:
                if is_lfs(p, data):
                    ptr = lfs_pointer(data)
                    s.update(size=len(data), blobId=git_sha1(ptr),
                             lfs={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(ptr)})
                else:
                    s.update(size=len(data), blobId=git_sha1(data))
            siblings.append(s)
        sha = self.hub.tamper.get("info_sha", sha)
        self._json({"_id": repo.repo_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": sha,
                    "private": repo.private, "gated": "auto" if repo.gated else False, "disabled": False,
                    "lastModified": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "tags": [], "siblings": siblings})

    def tree(self, m, query, body):
        """GET /api/{type}s/{repo}/tree/{revision}[/{path}]: every file below `path` (one page)."""
        repo = self._repo(TYPES[m.group(1)], m.group(2))
        sha = self._commit_of(repo, m.group(3))
        prefix = (m.group(4) or "").strip("/")
        out = []
        for p, data in sorted({**repo.commits[sha], **self.hub.tamper.get("extra_files", {})}.items()):
            if prefix and not p.startswith(prefix + "/"):
                continue
            entry = {"type": "file", "path": p, "size": len(data)}
            if is_lfs(p, data):
                ptr = lfs_pointer(data)
                entry.update(oid=git_sha1(ptr), lfs={"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                      "pointerSize": len(ptr)})
            else:
                entry["oid"] = git_sha1(data)
            out.append(entry)
        self._json(out)

    def resolve(self, m, query, body):
        repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(m.group(1) or "", "model")
        repo = self._repo(repo_type, m.group(2))
        sha = self._commit_of(repo, m.group(3))
        self._check_gate(repo)
        path = m.group(4)
        data = repo.commits[sha].get(path, self.hub.tamper.get("extra_files", {}).get(path))
        shown = str(self.hub.tamper.get("commit_header", sha))
        if data is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": shown})
        headers = {"X-Repo-Commit": shown, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        etag = self.hub.tamper.get("etag")
        if is_lfs(path, data):
            headers.update({"ETag": f'"{git_sha1(lfs_pointer(data))}"',
                            "X-Linked-Etag": f'"{etag or hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": len(data)})
        else:
            headers["ETag"] = f'"{etag or git_sha1(data)}"'
        if self.command == "HEAD":
            return self._send(200, data, headers, head=True)
        fault = self.hub.faults.get(path)
        if fault == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if rng and int(rng.group(1)) < len(data):
            start = int(rng.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if fault == "stall":
            self.send_response(206 if start else 200)
            for k, v in {**headers, "Content-Length": len(data) - start}.items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.hub.stalled.set()
            self.hub._release.wait(60)
            self.close_connection = True
            return
        self._send(206 if start else 200, data[start:], headers)

    # -- write endpoints ---------------------------------------------------------------------
    def create_repo(self, m, query, body):
        self._need_write()
        req = json.loads(body or b"{}")
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        repo_type = req.get("type") or "model"
        if (repo_type, repo_id) in self.hub.repos:
            raise _HubError(409, "You already created this repo")
        private = req.get("private", req.get("visibility") == "private")
        self.hub.add_repo(repo_id, repo_type=repo_type, private=bool(private))
        self._json({"url": f"{self.hub.url}/{PREFIX[repo_type]}{repo_id}", "name": repo_id})

    def create_branch(self, m, query, body):
        repo = self._repo(TYPES[m.group(1)], m.group(2), write=True)
        branch = m.group(3)
        if branch in repo.branches:
            raise _HubError(409, "Branch already exists")
        start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
        with self.hub.lock:
            repo.branches[branch] = self._commit_of(repo, start)
        self._json({})

    def validate_yaml(self, m, query, body):
        import yaml

        content = json.loads(body)["content"]
        front = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            if front:
                yaml.safe_load(front.group(1))
        except yaml.YAMLError as e:
            return self._json({"errors": [{"message": str(e)}]}, status=400)
        self._json({"warnings": []})

    def preupload(self, m, query, body):
        repo = self._repo(TYPES[m.group(1)], m.group(2), write=True)
        tree = repo.commits[self._commit_of(repo, m.group(3))]
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) and f["size"] > 0
            old = tree.get(f["path"])
            oid = None if old is None else (hashlib.sha256(old).hexdigest() if lfs else git_sha1(old))
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": files})

    def lfs_batch(self, m, query, body):
        repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(m.group(1) or "", "model")
        self._repo(repo_type, m.group(2), write=True)
        req = json.loads(body)
        objects = []
        for o in req["objects"]:
            entry = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.hub.lfs:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-store/{o['oid']}", "header": {}},
                                    "verify": {"href": f"{self.hub.url}/lfs-verify/{o['oid']}", "header": {}}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects})

    def lfs_put(self, m, query, body):
        oid = m.group(1)
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, "sha256 of the uploaded content does not match the oid")
        with self.hub.lock:
            self.hub.lfs[oid] = body
        self._send(200)

    def lfs_verify(self, m, query, body):
        req = json.loads(body)
        data = self.hub.lfs.get(req["oid"])
        if data is None or len(data) != req["size"]:
            raise _HubError(404, "object not uploaded")
        self._json({})

    def commit(self, m, query, body):
        repo = self._repo(TYPES[m.group(1)], m.group(2), write=True)
        branch = m.group(3)
        if branch not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files, deleted = {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[branch]:
                    raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self.hub.lfs.get(value["oid"])
                if data is None:
                    raise _HubError(400, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = data
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
        sha = self.hub.commit(repo.repo_id, files, repo_type=repo.repo_type, branch=branch, delete=tuple(deleted))
        self._json({"commitUrl": f"{self.hub.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}",
                    "commitOid": sha, "success": True, "pullRequestUrl": None})


_ROUTES = [
    (rf"^/api/(models|datasets|spaces)/{_REPO}(?:/revision/([^/]+))?$", "GET", _Handler.info),
    (rf"^/api/(models|datasets|spaces)/{_REPO}/tree/([^/]+)(/.*)?$", "GET", _Handler.tree),
    (rf"^/(datasets/|spaces/)?{_REPO}/resolve/([^/]+)/(.+)$", "GET", _Handler.resolve),
    (rf"^/(datasets/|spaces/)?{_REPO}/resolve/([^/]+)/(.+)$", "HEAD", _Handler.resolve),
    (r"^/api/repos/create$", "POST", _Handler.create_repo),
    (r"^/api/validate-yaml$", "POST", _Handler.validate_yaml),
    (rf"^/api/(models|datasets|spaces)/{_REPO}/branch/(.+)$", "POST", _Handler.create_branch),
    (rf"^/api/(models|datasets|spaces)/{_REPO}/preupload/(.+)$", "POST", _Handler.preupload),
    (rf"^/api/(models|datasets|spaces)/{_REPO}/commit/(.+)$", "POST", _Handler.commit),
    (rf"^/(datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch$", "POST", _Handler.lfs_batch),
    (r"^/lfs-store/([0-9a-f]{64})$", "PUT", _Handler.lfs_put),
    (r"^/lfs-verify/([0-9a-f]{64})$", "POST", _Handler.lfs_verify),
]

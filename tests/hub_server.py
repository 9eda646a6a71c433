"""A local Hugging Face Hub for the tests: a real HTTP server on 127.0.0.1 speaking the part of the Hub API that
``huggingface_hub`` (the locked 2.4) uses to create repos, commit, list and download files.

Endpoints (what the client sends, read from ``huggingface_hub/hf_api.py``, ``_commit_api.py``, ``lfs.py`` and
``file_download.py``):

- ``GET /api/whoami-v2`` (401 for a wrong token; the token's ``role`` is the hub's ``role=``, default ``write``);
- ``POST /api/repos/create`` (409 when the repo exists, as the Hub), ``GET /api/{models,datasets}/{id}`` and
  ``.../revision/{rev}`` (repo info with ``siblings``, LFS sha256 with ``?blobs=true``), ``GET .../tree/{rev}``;
- ``POST /api/validate-yaml`` (the card's YAML header is parsed, bad YAML is a 400);
- commits: ``POST .../preupload/{rev}`` (regular vs LFS: binary or large files are LFS, as on the Hub, unless the
  hub is created with ``lfs=False``), ``POST /{id}.git/info/lfs/objects/batch`` (basic transfer; objects already
  stored need no upload), ``PUT /lfs-objects/{sha256}``, ``POST /lfs-verify``, and ``POST .../commit/{rev}``
  (ndjson: header, ``file`` base64 entries, ``lfsFile`` entries whose object must have been uploaded,
  ``deletedFile``). A commit is applied whole or not at all;
- downloads: ``HEAD``/``GET /{id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git blob sha1) or
  ``X-Linked-Etag`` / ``X-Linked-Size`` (LFS sha256), and ``X-Error-Code: EntryNotFound`` / ``RepoNotFound`` /
  ``RevisionNotFound`` on 404, which the client maps to its typed errors.

The client speaks Xet for LFS files when ``hf_xet`` is installed; this server has no Xet storage, so pushes to it
run with ``HF_HUB_DISABLE_XET=1`` (the client then uses the LFS basic transfer).

Writes and private reads need ``Authorization: Bearer <token>``. :meth:`FakeHub.fail_next` makes the next
matching requests answer 500 or drop the connection without an answer; :attr:`FakeHub.requests` records every
request (method, path, status) and :meth:`FakeHub.commits` every commit of a repo.

Example::

    with FakeHub(token="hf_x") as hub:      # hub.url = "http://127.0.0.1:PORT"
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_x", "HF_HUB_DISABLE_XET": "1"}
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO = r"(?P<repo>[^/]+/[^/]+)"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_LIMIT = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS, and binary files of any size


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    size: int
    blob: str  # git blob sha1 (the ETag of a regular file)
    lfs: str | None = None  # sha256 of an LFS file


@dataclass
class Commit:
    oid: str
    title: str
    files: dict[str, StoredFile]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class FakeHub:
    """The server (see the module docstring). ``lfs=False`` makes every file a regular (base64) upload."""

    def __init__(self, token: str | None = None, lfs: bool = True, role: str = "write") -> None:
        self.token, self.lfs, self.role = token, lfs, role  # role: what whoami says the token may do
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git sha1 -> content (regular files) and sha256 -> content (LFS)
        self.requests: list[tuple[str, str, int]] = []
        self.bodies: list[bytes] = []  # every request body, for the token test
        self.headers: list[dict[str, str]] = []
        self._failures: list[dict] = []
        self._lock = threading.RLock()  # handlers answer while holding it
        self._server: ThreadingHTTPServer | None = None

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, method: str, path_pattern: str, mode: str = "500", times: int = 1, body: str = "") -> None:
        """The next ``times`` requests whose method and path match answer 500 (with ``body``) or drop the connection."""
        assert mode in ("500", "drop")
        self._failures.append({"method": method, "pattern": re.compile(path_pattern), "mode": mode, "left": times,
                               "body": body})

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        return list(self.repos[(repo_type, repo_id)].commits)

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file at the head of a repo."""
        head = self.repos[(repo_type, repo_id)].head
        return {path: self.blobs[f.lfs or f.blob] for path, f in head.files.items()}

    def write_requests(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[0] in ("POST", "PUT", "DELETE") and r[1] != "/api/validate-yaml"]

    # -- state -----------------------------------------------------------------------------------

    def _commit(self, repo: Repo, title: str, files: dict[str, StoredFile]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        digest = hashlib.sha1(json.dumps([parent, title, sorted((p, f.blob, f.lfs) for p, f in files.items())]).encode())
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        commit = Commit(digest.hexdigest(), title, files, now)
        repo.commits.append(commit)
        return commit

    def _store_regular(self, data: bytes) -> StoredFile:
        sha1 = git_blob_sha1(data)
        self.blobs[sha1] = data
        return StoredFile(len(data), sha1)


def _is_binary(sample: bytes) -> bool:
    return b"\0" in sample


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, body: bytes | dict | list | None = None, headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        body = body or b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        with self.hub._lock:
            self.hub.requests.append((self.command, self.path, status))

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False,
               extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, head=head)

    def _authorized(self) -> bool:
        token = self.hub.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _injected_failure(self) -> bool:
        with self.hub._lock:
            for rule in self.hub._failures:
                if rule["left"] > 0 and rule["method"] == self.command and rule["pattern"].search(self.path):
                    rule["left"] -= 1
                    break
            else:
                return False
        if rule["mode"] == "drop":
            self.close_connection = True
            with self.hub._lock:
                self.hub.requests.append((self.command, self.path, 0))
            self.connection.close()
            return True
        self._error(500, rule["body"] or "Internal Error (injected)")
        return True

    def _dispatch(self) -> None:
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        with self.hub._lock:
            self.hub.bodies.append(body)
            self.hub.headers.append({k.lower(): v for k, v in self.headers.items()})
        if self._injected_failure():
            return
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        for method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and method == self.command:
                return handler(self, match, query, body)
        self._error(404, f"fake hub: no route for {self.command} {path}")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    # -- repos -----------------------------------------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str, head: bool = False, write: bool = False) -> Repo | None:
        repo = self.hub.repos.get((repo_type, unquote(repo_id)))
        if repo is None or (repo.private and not self._authorized()) or (write and not self._authorized()):
            if write and repo is not None:
                self._error(401, "Invalid credentials in Authorization header", head=head)
            else:
                self._error(404 if self._authorized() else 401, "Repository not found", "RepoNotFound", head=head)
            return None
        return repo

    def _commit_at(self, repo: Repo, revision: str, head: bool = False) -> Commit | None:
        revision = unquote(revision)
        if revision == "main":
            return repo.head
        for commit in repo.commits:
            if commit.oid == revision:
                return commit
        self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        return None

    def whoami(self, match, query, body) -> None:
        if self.hub.token is None or not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": "org", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": self.hub.role}}})

    def create_repo(self, match, query, body) -> None:
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.hub.url}/{PREFIX[repo_type]}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:  # the Hub answers 409 with the repo's url
                message = f"You already created this {repo_type} repo"
                return self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
            private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
            repo = Repo(repo_type, repo_id, private)
            gitattributes = self.hub._store_regular(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
            self.hub._commit(repo, "initial commit", {".gitattributes": gitattributes})
            self.hub.repos[(repo_type, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def repo_info(self, match, query, body) -> None:
        repo_type = TYPES[match["type"]]
        repo = self._repo(repo_type, match["repo"])
        if repo is None:
            return
        commit = self._commit_at(repo, match["rev"] or "main")
        if commit is None:
            return
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if query.get("blobs"):
                sibling.update(size=stored.size, blobId=stored.blob)
                if stored.lfs:
                    sibling["lfs"] = {"sha256": stored.lfs, "size": stored.size, "pointerSize": 134}
            siblings.append(sibling)
        card = commit.files.get("README.md")
        card_data = _front_matter(self.hub.blobs[card.blob]) if card else None
        info = {"id": repo.repo_id, "_id": repo.repo_id, "sha": commit.oid, "private": repo.private,
                "lastModified": commit.date, "createdAt": repo.commits[0].date, "siblings": siblings, "tags": [],
                "disabled": False, "gated": False, "downloads": 0, "likes": 0}
        if card_data is not None:
            info["cardData"] = card_data
        self._send(200, info)

    def tree(self, match, query, body) -> None:
        repo = self._repo(TYPES[match["type"]], match["repo"])
        commit = repo and self._commit_at(repo, match["rev"])
        if commit is None:
            return
        prefix = (unquote(match["path"] or "")).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries, folders = [], set()
        for path, stored in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                                    "path": folder})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": stored.blob, "size": stored.size, "path": path}
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.lfs, "size": stored.size, "pointerSize": 134}
                entries.append(entry)
        self._send(200, entries)

    def validate_yaml(self, match, query, body) -> None:
        content = json.loads(body)["content"]
        try:
            _front_matter(content.encode())
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    # -- commits ---------------------------------------------------------------------------------

    def preupload(self, match, query, body) -> None:
        repo = self._repo(TYPES[match["type"]], match["repo"], write=True)
        commit = repo and self._commit_at(repo, match["rev"])
        if commit is None:
            return
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = self.hub.lfs and (item["size"] > LFS_LIMIT or _is_binary(sample))
            existing = commit.files.get(item["path"])
            oid = (existing.lfs or existing.blob) if existing else None
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid if (existing and bool(existing.lfs) == lfs) else None})
        self._send(200, {"files": files, "commitOid": commit.oid})

    def lfs_batch(self, match, query, body) -> None:
        repo = self._repo(TYPES.get(match["type"] or "models", "model"), match["repo"], write=True)
        if repo is None:
            return
        objects = []
        for obj in json.loads(body)["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.blobs:  # already stored: no actions, the client skips the upload
                answer["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-objects/{obj['oid']}"},
                                     "verify": {"href": f"{self.hub.url}/lfs-verify"}}
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, match, query, body) -> None:
        if hashlib.sha256(body).hexdigest() != match["oid"]:
            return self._error(400, "sha256 mismatch")
        with self.hub._lock:
            self.hub.blobs[match["oid"]] = body
        self._send(200)

    def lfs_verify(self, match, query, body) -> None:
        oid = json.loads(body)["oid"]
        if oid not in self.hub.blobs:
            return self._error(404, f"LFS object {oid} not uploaded")
        self._send(200, {"success": True})

    def commit(self, match, query, body) -> None:
        repo_type = TYPES[match["type"]]
        repo = self._repo(repo_type, match["repo"], write=True)
        commit = repo and self._commit_at(repo, match["rev"])
        if commit is None:
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = dict(commit.files)
        new_blobs = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                sha1 = git_blob_sha1(data)
                new_blobs[sha1] = data
                files[value["path"]] = StoredFile(len(data), sha1)
            elif key == "lfsFile":
                data = self.hub.blobs.get(value["oid"])
                if data is None:  # nothing of this commit is applied
                    return self._error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(len(data), git_blob_sha1(data), value["oid"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif key != "header":
                return self._error(400, f"fake hub: unsupported commit entry {key!r}")
        with self.hub._lock:
            if repo.head.oid != commit.oid:
                return self._error(412, "The branch moved while committing")
            self.hub.blobs.update(new_blobs)
            new = self.hub._commit(repo, header["summary"], files)
        url = f"{self.hub.url}/{PREFIX[repo_type]}{repo.repo_id}/commit/{new.oid}"
        self._send(200, {"success": True, "commitOid": new.oid, "commitUrl": url})

    # -- downloads -------------------------------------------------------------------------------

    def resolve(self, match, query, body) -> None:
        head = self.command == "HEAD"
        repo = self._repo(TYPES.get(match["type"] or "models", "model"), match["repo"], head=head)
        commit = repo and self._commit_at(repo, match["rev"], head=head)
        if commit is None:
            return
        path = unquote(match["path"])
        stored = commit.files.get(path)
        if stored is None:
            return self._error(404, "Entry not found", "EntryNotFound", head=head, extra={"X-Repo-Commit": commit.oid})
        data = self.hub.blobs[stored.lfs or stored.blob]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.blob}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.lfs}"', "X-Linked-Size": str(stored.size)})
        status = 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and not head:
            start = int(ranged[1])
            end = int(ranged[2]) if ranged[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        if head:
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with self.hub._lock:
                self.hub.requests.append((self.command, self.path, 200))
            return
        self._send(status, data, headers)


def _front_matter(content: bytes) -> dict | None:
    text = content.decode("utf-8")
    if not text.startswith("---"):
        return None
    block = text.split("---", 2)[1]
    data = yaml.safe_load(block)
    return data if isinstance(data, dict) else None


API = r"/api/(?P<type>models|datasets|spaces)/" + REPO
ROUTES = [
    ("GET", r"/api/whoami-v2", _Handler.whoami),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("GET", API + r"(?:/revision/(?P<rev>[^/]+))?", _Handler.repo_info),
    ("GET", API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    ("POST", API + r"/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", API + r"/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("POST", r"/(?:(?P<type>datasets|spaces)/)?" + REPO + r"\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", r"/lfs-objects/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    ("POST", r"/lfs-verify", _Handler.lfs_verify),
    ("GET", r"/(?:(?P<type>datasets|spaces)/)?" + REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("HEAD", r"/(?:(?P<type>datasets|spaces)/)?" + REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


def use_in_process(monkeypatch, hub: FakeHub, token: str | None) -> None:
    """Let this (test) process's ``huggingface_hub`` reach ``hub``: the suite runs with ``HF_HUB_OFFLINE=1``, read at
    import, so the offline flag is switched off for the test; Xet is off (the hub has no Xet storage); ``HF_TOKEN``
    is set. ``HF_ENDPOINT`` is also read at import: its constant is pointed at ``hub``, and calls that take
    an endpoint get ``endpoint=hub.url`` (subprocesses get ``HF_ENDPOINT`` in their environment instead)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # calls that name no endpoint (HfApi()) go to the local Hub
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)

"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for tests (no public Hub is reachable here).

It answers the requests huggingface_hub 2.4's `HfApi.whoami`, `create_repo`, `create_branch` and
`create_commit` make (found by reading huggingface_hub/hf_api.py, _commit_api.py and lfs.py):

    GET  /api/whoami-v2
    POST /api/repos/create                        {"name", "organization", "visibility", "type"}
    POST /api/models/{repo}/branch/{branch}
    POST /api/validate-yaml                       (sent before a commit that adds README.md)
    POST /api/models/{repo}/preupload/{revision}  -> an upload mode per file: "regular" or "lfs"
    POST /api/models/{repo}/commit/{revision}     NDJSON: a header line, then `file` lines with base64
                                                  content or `lfsFile` lines naming an uploaded sha256
    POST /{repo}.git/info/lfs/objects/batch       LFS "basic" transfer, then PUT /lfs-upload/{oid}

Files whose names end with one of `lfs_suffixes` get the "lfs" upload mode; huggingface_hub then
sends them through Xet storage when hf_xet is installed, which this server does not implement, so
tests that use it set HF_HUB_DISABLE_XET=1 to get the LFS batch protocol. Committed files are kept
in memory per repository and revision, with the history of commits. `fail` makes endpoints (e.g.
"commit") answer HTTP 500, after `fail_after` requests to them have been served normally.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    private: bool
    revisions: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    history: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (revision, message, paths)


class HubServer:
    """The stand-in Hub; use as a context manager, read `.repos`, `.requests` and `files()` afterwards."""

    def __init__(
        self, token: str, lfs_suffixes: tuple[str, ...] = (), fail: tuple[str, ...] = (), fail_after: int = 0
    ) -> None:
        self.token = token
        self.lfs_suffixes = lfs_suffixes
        self.fail = set(fail)  # endpoints ("commit", "preupload", ...) that answer 500 ...
        self.fail_after = fail_after  # ... once this many requests to them have succeeded
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files committed to `repo_id` at `revision`, by path."""
        return dict(self.repos[repo_id].revisions[revision])

    def count(self, endpoint: str) -> int:
        """How many requests reached `endpoint` (a path fragment such as "/commit/")."""
        return sum(endpoint in path for _, path, _ in self.requests)

    # --- endpoint logic: each returns (status, JSON-able body) -------------------------------------
    def whoami(self) -> tuple[int, Any]:
        return 200, {
            "type": "user",
            "name": "tester",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        }

    def create_repo(self, body: dict) -> tuple[int, Any]:
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def create_branch(self, repo_id: str, branch: str) -> tuple[int, Any]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": f"Repository {repo_id} not found"}
        if branch in repo.revisions:
            return 409, {"error": "Reference already exists"}
        repo.revisions[branch] = dict(repo.revisions["main"])
        return 200, {}

    def preupload(self, repo_id: str, body: dict) -> tuple[int, Any]:
        if repo_id not in self.repos:
            return 404, {"error": f"Repository {repo_id} not found"}
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(self.lfs_suffixes) else "regular",
                "shouldIgnore": False,
            }
            for f in body["files"]
        ]
        return 200, {"files": modes}

    def lfs_batch(self, body: dict) -> tuple[int, Any]:
        objects = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}},
            }
            for o in body["objects"]
        ]
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, oid: str, data: bytes) -> tuple[int, Any]:
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": "sha256 mismatch"}
        self.lfs_objects[oid] = data
        return 200, {}

    def commit(self, repo_id: str, revision: str, ndjson: bytes) -> tuple[int, Any]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"error": f"Repository {repo_id} not found"}
        if revision not in repo.revisions:
            return 404, {"error": f"Invalid rev id: {revision}"}
        files, message, paths = dict(repo.revisions[revision]), "", []
        for line in ndjson.splitlines():
            item = json.loads(line)
            value = item["value"]
            paths.append(value.get("path", ""))
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}
                files[value["path"]] = self.lfs_objects[value["oid"]]
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
        repo.revisions[revision] = files
        repo.history.append((revision, message, [p for p in paths if p]))
        oid = hashlib.sha1(f"{repo_id}@{revision}#{len(repo.history)}".encode()).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}

    def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Dispatch one authenticated request to its endpoint."""
        if path == "/api/whoami-v2":
            return self.whoami()
        if path == "/api/validate-yaml":
            return 200, {"warnings": []}
        if path == "/api/repos/create":
            return self.create_repo(json.loads(body))
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self.lfs_upload(path.rsplit("/", 1)[1], body)
        if path.endswith(".git/info/lfs/objects/batch"):
            return self.lfs_batch(json.loads(body))
        if path.startswith("/api/models/"):
            parts = path[len("/api/models/") :].split("/")
            repo_id, action, rest = "/".join(parts[:2]), parts[2], "/".join(parts[3:])
            if action == "branch":
                return self.create_branch(repo_id, rest)
            if action == "preupload":
                return self.preupload(repo_id, json.loads(body))
            if action == "commit":
                return self.commit(repo_id, rest, body)
        return 404, {"error": f"the stand-in Hub does not implement {method} {path}"}


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            from urllib.parse import unquote, urlsplit

            path = unquote(urlsplit(self.path).path)
            body = self._read_body()
            endpoint = next((name for name in hub.fail if f"/{name}" in path), None)
            if endpoint is not None and hub.count(f"/{endpoint}") < hub.fail_after:
                endpoint = None
            authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
            if not authorized and not path.startswith("/lfs-upload/"):
                status, payload = 401, {"error": "Invalid credentials in Authorization header"}
            elif endpoint is not None:
                status, payload = 500, {"error": f"Internal Error (the test asked {endpoint} to fail)"}
            else:
                with hub.lock:
                    status, payload = hub.route(self.command, path, body)
            hub.requests.append((self.command, path, status))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler

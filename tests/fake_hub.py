"""A Hugging Face hub on 127.0.0.1 for the publish / download round trip: the routes huggingface_hub's
create_repo, upload_folder (preupload, tree, commit), repo_info and snapshot_download use, with model repos
held in memory as commits of {path: bytes}. Every file is taken inline ("regular" upload mode: the hub's choice,
so no LFS or Xet server is needed). A private repo is invisible without the token."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

TOKEN = "hf_test_write_token"
ATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # what the hub puts in a new repo
USER = "tester"


@dataclass
class Repo:
    private: bool
    commits: list[tuple[str, str, dict[str, bytes]]] = field(default_factory=list)  # (oid, summary, files)

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1][0], self.commits[-1][2]
        return next(((oid, files) for oid, _, files in self.commits if oid.startswith(revision)), None)


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.repos: dict[str, Repo] = {}
        self.log: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):  # quiet; the server keeps its own log
        pass

    def reply(self, status: int, body=b"", headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def repo(self, repo_id: str) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        return None if repo is None or (repo.private and not self.authorized()) else repo

    def route(self):
        path = unquote(urlparse(self.path).path)
        self.server.log.append(f"{self.command} {path}")
        for pattern, handler in ROUTES:
            match = re.fullmatch(pattern, f"{self.command} {path}")
            if match:
                return handler(self, *match.groups())
        return self.reply(404, {"error": f"fake hub: no route {self.command} {path}"})

    do_GET = do_POST = do_HEAD = route

    def whoami(self):
        if not self.authorized():
            return self.reply(401, {"error": "Invalid credentials in Authorization header"})
        return self.reply(200, {"type": "user", "name": USER, "orgs": [],
                                "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def create(self):
        if not self.authorized():
            return self.reply(401, {"error": "Invalid credentials in Authorization header"})
        spec = json.loads(self.body())
        repo_id = f"{spec.get('organization') or USER}/{spec['name']}"
        if repo_id in self.server.repos:
            return self.reply(409, {"error": "You already created this model repo", "url": f"{self.server.endpoint}/{repo_id}"})
        repo = self.server.repos[repo_id] = Repo(private=spec.get("visibility") == "private" or bool(spec.get("private")))
        repo.commits.append((hashlib.sha1(repo_id.encode()).hexdigest(), "initial commit", {".gitattributes": ATTRIBUTES}))
        return self.reply(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def validate_yaml(self):
        self.body()
        return self.reply(200, {"errors": [], "warnings": []})

    def preupload(self, repo_id, revision):
        if self.repo(repo_id) is None or not self.authorized():
            return self.reply(404, {"error": "Repository not found"})
        files = json.loads(self.body())["files"]
        return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})

    def commit(self, repo_id, revision):
        repo = self.repo(repo_id)
        if repo is None or not self.authorized():
            return self.reply(404, {"error": "Repository not found"})
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        files = dict(repo.at("main")[1]) if repo.commits else {}
        for line in lines:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                files.pop(line["value"]["path"], None)
            elif line["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(line["value"]["path"].rstrip("/") + "/")}
        summary = lines[0]["value"]["summary"]
        oid = hashlib.sha1(json.dumps([summary, len(repo.commits), sorted(files)]).encode()
                           + b"".join(files[p] for p in sorted(files))).hexdigest()
        repo.commits.append((oid, summary, files))
        return self.reply(200, {"commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                                "pullRequestUrl": None})

    def info(self, repo_id, revision="main"):
        repo = self.repo(repo_id)
        state = repo.at(revision) if repo else None
        if repo is None:
            return self.reply(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if state is None:
            return self.reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        oid, files = state
        return self.reply(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private,
                                "siblings": [{"rfilename": p} for p in sorted(files)]})

    def tree(self, repo_id, revision, folder=""):
        repo = self.repo(repo_id)
        state = repo.at(revision) if repo else None
        if state is None:
            return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        folder = (folder or "").strip("/")
        prefix = folder + "/" if folder else ""
        return self.reply(200, [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                                for p, c in sorted(state[1].items()) if p.startswith(prefix)])

    def resolve(self, repo_id, revision, path):
        repo = self.repo(repo_id)
        state = repo.at(revision) if repo else None
        if state is None or path not in state[1]:
            code = "RepoNotFound" if repo is None else "RevisionNotFound" if state is None else "EntryNotFound"
            return self.reply(404, {"error": code}, {"X-Error-Code": code})
        content = state[1][path]
        return self.reply(200, content, {"Content-Type": "application/octet-stream", "X-Repo-Commit": state[0],
                                         "ETag": f'"{hashlib.sha256(content).hexdigest()}"'})


REPO = r"([^/]+/[^/]+)"
ROUTES = [
    (r"GET /api/whoami-v2", Handler.whoami),
    (r"POST /api/repos/create", Handler.create),
    (r"POST /api/validate-yaml", Handler.validate_yaml),
    (rf"POST /api/models/{REPO}/preupload/([^/]+)", Handler.preupload),
    (rf"POST /api/models/{REPO}/commit/([^/]+)", Handler.commit),
    (rf"GET /api/models/{REPO}/revision/([^/]+)", Handler.info),
    (rf"GET /api/models/{REPO}", Handler.info),
    (rf"GET /api/models/{REPO}/tree/([^/]+)(/.*)?", Handler.tree),
    (rf"(?:GET|HEAD) /{REPO}/resolve/([^/]+)/(.+)", Handler.resolve),
]

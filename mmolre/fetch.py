"""Getting files from the network, or from the user, safely.

- `fetch(url, dest)`: HTTP download with range resume of `<dest>.part`, retries with
  exponential backoff, a progress bar; the file appears under its name only when complete.
- `Manifest`: SHA-256 and size of every file, recorded on first success and checked on every
  later use; a mismatch removes the file and says so.
- `fetch_members(url, target, include)`: when the server honours HTTP Range, only the zip members
  `include` accepts: the central directory is read remotely (by zipfile itself), each member is
  fetched with one ranged request (all on one pooled urllib3 client, so connections are reused), checked against its CRC-32 and written under its name when complete; a cut
  connection resumes at the byte it stopped at, and a rerun skips members already there and intact.
- `import_archive(path, dest)`: the user's own copy of an archive, linked or copied in.
- `safe_extract(archive, target)`: unpacks a zip or tar, refusing members that would land
  outside `target` (absolute paths, `..`, links).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import urllib3
from tqdm import tqdm

from mmolre import MmolreError

CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


POOL = urllib3.PoolManager(retries=False)  # one pooled client: a connection serves request after request
FATAL = (401, 403, 404, 410)  # a server's final word: no retry


class HTTPStatus(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(f"HTTP {code} {reason}")
        self.code = code


NETWORK_ERRORS = (urllib3.exceptions.HTTPError, socket.timeout, ConnectionError, OSError)


def get(url: str, timeout_s: float, headers: dict | None = None) -> urllib3.BaseHTTPResponse:
    """A streaming GET through the pool; HTTPStatus for an error status (the connection is let go)."""
    response = POOL.request("GET", url, headers=headers or {}, timeout=timeout_s, preload_content=False)
    if response.status >= 400:
        response.close()
        raise HTTPStatus(response.status, response.reason or "")
    return response


def retrying(url: str, attempt, retries: int, backoff_s: float, after: str):
    """attempt() until it returns, at most `retries` times with exponential backoff between tries. HTTP 401, 403,
    404 and 410 end it at once; when every try fails, MmolreError says what to do and `after` (what is kept)."""
    error = None
    for k in range(retries):
        if k:
            time.sleep(backoff_s * 2 ** (k - 1))
        try:
            return attempt()
        except HTTPStatus as e:
            if e.code in FATAL:
                raise MmolreError(f"{url}: {e}") from None
            error = str(e)
        except NETWORK_ERRORS as e:
            error = str(getattr(e, "reason", None) or e)
    raise MmolreError(f"{url} is unreachable ({error}) after {retries} tries. Download it any way you can and "
                      f"run `mmolre download --from-archive PATH`, or point data.mirror at a copy; {after}")


def fetch(url: str, dest: Path, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part`; raise MmolreError naming the URL when it cannot."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    def attempt() -> Path:
        have = part.stat().st_size if part.exists() else 0
        try:
            response = get(url, timeout_s, {"Range": f"bytes={have}-"} if have else None)
        except HTTPStatus as e:
            if not (e.code == 416 and have):  # 416 with a part file: nothing left to send, it is complete
                raise
            os.replace(part, dest)
            return dest
        with response:
            resumed = have > 0 and response.status == 206
            length = response.headers.get("Content-Length")
            total = (have if resumed else 0) + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                    desc=f"download {dest.name}", leave=False) as progress:
                for block in iter(lambda: response.read1(CHUNK), b""):  # what arrived stays when cut
                    out.write(block)
                    progress.update(len(block))
        if total is not None and part.stat().st_size != total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")
        os.replace(part, dest)
        return dest

    return retrying(url, attempt, retries, backoff_s, f"a partial download is kept in {part} and resumes next time")


def range_size(url: str, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0) -> int | None:
    """The size of `url` when its server honours Range requests (answers 206 with a Content-Range),
    else None. Raises MmolreError naming the URL when the server cannot be reached."""
    def attempt() -> int | None:
        response = get(url, timeout_s, {"Range": "bytes=0-0"})
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if response.status == 206:
            response.drain_conn()  # one byte: the connection goes back to the pool
            response.release_conn()
        else:
            response.close()  # a whole file on its way: not read
        return int(total) if response.status == 206 and total.isdigit() else None

    return retrying(url, attempt, retries, backoff_s, "files already fetched are kept and not fetched again")


class RangeFile(io.RawIOBase):
    """A remote file of known size, read (and seeked) through HTTP Range requests on the pooled client. Each
    read asks for exactly the bytes wanted, except inside a span announced with `expect(start, end)`: one
    request then serves every sequential read of the span (a zip member: one request per member). A
    connection cut mid-read is retried from the byte it stopped at. `received` counts the payload bytes."""

    def __init__(self, url: str, size: int, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0,
                 on_bytes=None):
        self.url, self.size, self.retries, self.backoff_s, self.timeout_s = url, size, retries, backoff_s, timeout_s
        self.position, self.received, self.on_bytes = 0, 0, on_bytes or (lambda n: None)
        self.span, self.response, self.cursor, self.response_end = (0, 0), None, -1, -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: 0, 1: self.position, 2: self.size}[whence] + offset
        return self.position

    def expect(self, start: int, end: int) -> None:
        """The next reads run through [start, end) in order: fetch them with one request."""
        self.span = (start, min(end, self.size))

    def let_go(self) -> None:
        """End the open response: drained when little is left (its connection is reused), else closed."""
        if self.response is not None:
            if self.response_end - self.cursor <= 1 << 16:
                self.received += len(self.response.read())  # crossed the network all the same
                self.response.release_conn()
            else:
                self.response.close()
        self.response = None

    def open_at(self, first: int, want: int) -> None:
        start, end = self.span
        last = max(first + want, end if start <= first < end else 0) - 1
        self.let_go()
        self.response = get(self.url, self.timeout_s, {"Range": f"bytes={first}-{last}"})
        if self.response.status != 206:
            self.response.close()
            self.response = None
            raise MmolreError(f"{self.url}: the server stopped honouring Range requests (HTTP 200)")
        self.cursor, self.response_end = first, last + 1

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.size - self.position)
        if want <= 0:
            return 0
        view, got = memoryview(buffer), 0

        def attempt() -> None:  # asks for the bytes still missing: a retry resumes where the cut came
            nonlocal got
            if self.response is None or self.cursor != self.position + got:
                self.open_at(self.position + got, want - got)
            try:
                while got < want:
                    block = self.response.read1(want - got)  # what arrived counts even when cut
                    if not block:
                        break
                    n = len(block)
                    view[got:got + n] = block
                    got, self.cursor, self.received = got + n, self.cursor + n, self.received + n
                    self.on_bytes(n)
            except BaseException:
                self.response.close()
                self.response = None
                raise
            if got < want:
                self.response.close()
                self.response = None
                raise ConnectionError(f"connection closed after {got} of {want} bytes")
            if self.cursor >= self.response_end:
                self.let_go()

        retrying(self.url, attempt, self.retries, self.backoff_s,
                 "members already fetched are kept and not fetched again")
        self.position += got
        return got


def _is_link(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member is a symbolic link (Unix mode bits in its external attributes)."""
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _intact(path: Path, info: zipfile.ZipInfo) -> bool:
    """Whether `path` already holds member `info` (same size and CRC-32)."""
    if not path.is_file() or path.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, url: str, remote: "RangeFile") -> None:
    """One member of the remote archive into `dest`, under a .part name until it is whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with archive.open(info) as member, open(part, "wb") as out:
            for block in iter(lambda: member.read(CHUNK), b""):
                out.write(block)
    except zipfile.BadZipFile as e:
        part.unlink(missing_ok=True)
        raise MmolreError(f"{url}: member {info.filename} is corrupt ({e}); nothing was kept under its "
                          "name. Try again later, or download the whole archive and use --from-archive") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        remote.let_go()  # the member's slack: read, so the connection serves the next one
    os.replace(part, dest)


def fetch_members(url: str, target: Path, include, retries: int = 4, backoff_s: float = 1.0,
                  timeout_s: float = 30.0) -> dict | None:
    """Fetch the members of the remote zip `url` that `include(name)` accepts into `target/<name>`,
    or return None (fetching nothing) when the server does not honour Range requests.

    Returns {"members": n, "bytes_needed": compressed bytes of those members, "bytes_received": payload
    that crossed the network in this call}. A member whose CRC-32 does not match is refused (nothing is
    left under its name); a rerun fetches only members that are missing or not intact."""
    size = range_size(url, retries, backoff_s, timeout_s)
    if size is None:
        return None
    remote = RangeFile(url, size, retries, backoff_s, timeout_s)
    try:
        archive = zipfile.ZipFile(remote)
    except zipfile.BadZipFile as e:
        raise MmolreError(f"{url}: not a readable zip archive ({e})") from None
    with archive:
        wanted = [info for info in archive.infolist() if not info.is_dir() and include(info.filename)]
        for info in wanted:
            _check_member(info.filename, _is_link(info), Path(url))
        todo = [info for info in wanted if not _intact(target / info.filename, info)]
        starts = sorted({i.header_offset for i in archive.infolist()} | {archive.start_dir})
        ends = dict(zip(starts, starts[1:]))  # a member's bytes (header, data, descriptor) end where the next begin
        needed = sum(info.compress_size for info in wanted)
        print(f"download: {url}: {len(wanted)} needed members, {needed / 1e9:.2f} GB of the archive's "
              f"{size / 1e9:.2f} GB; {len(todo)} to fetch (the others are here and intact)")
        with tqdm(total=sum(i.compress_size for i in todo), unit="B", unit_scale=True, leave=False,
                  desc=f"download {url.rsplit('/', 1)[-1]} (needed members)") as progress:
            remote.on_bytes = progress.update
            for info in todo:
                remote.expect(info.header_offset, ends[info.header_offset])
                _copy_member(archive, info, target / info.filename, url, remote)
    return {"members": len(wanted), "bytes_needed": needed, "bytes_received": remote.received}


class Manifest:
    """SHA-256 and size per file name, kept in `path` (JSON); trust on first use, checked after."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def verify(self, file: Path) -> dict | None:
        """Check `file` against its recorded SHA-256; returns its new entry (to `record` once the file has
        proved good) when none is recorded yet. A mismatch moves the file aside and says how to reset."""
        digest, size = sha256(file), file.stat().st_size
        known = self.entries.get(file.name)
        if known is not None and "sha256" in known and digest != known["sha256"]:
            bad = file.with_name(file.name + ".corrupt")
            os.replace(file, bad)
            raise MmolreError(f"{file.name}: SHA-256 {digest[:16]}... does not match the recorded {known['sha256'][:16]}... "
                              f"(size {size} bytes); moved aside to {bad}. Download it again or import a good copy "
                              f"with --from-archive; if the recorded one is wrong, delete the {file.name!r} entry "
                              f"of {self.path} to start over")
        return None if known is not None else {"sha256": digest, "size": size}

    def record(self, name: str, entry: dict) -> None:
        self.entries[name] = entry
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def import_archive(source: Path, dest: Path) -> Path:
    """Hard-link (or copy) the user's file to `dest`, atomically."""
    if not source.is_file():
        raise MmolreError(f"--from-archive {source}: no such file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".importing")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return dest


def _check_member(name: str, is_link: bool, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or is_link or (path.parts and ":" in path.parts[0]):
        raise MmolreError(f"{archive}: refusing member {name!r} (absolute path, '..' or link would escape the "
                          "target folder); the archive is not safe to unpack")


def safe_extract(archive: Path, target: Path, include=None) -> None:
    """Unpack a .zip or tar archive into `target` (only members whose name `include` accepts, if given);
    every member is checked before anything is written."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = include or (lambda name: True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _check_member(info.filename, _is_link(info), archive)
                z.extractall(target, members=[i for i in z.infolist() if wanted(i.filename)])  # checks each CRC-32
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for member in t.getmembers():
                    _check_member(member.name, member.issym() or member.islnk(), archive)
                t.extractall(target, members=[m for m in t.getmembers() if wanted(m.name)], filter="data")
        else:
            raise MmolreError(f"{archive}: neither a zip nor a tar archive (truncated or not an archive?)")
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
        raise MmolreError(f"{archive}: corrupt archive ({e})") from None

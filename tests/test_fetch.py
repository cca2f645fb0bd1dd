"""Downloads against a local HTTP server: resume, checksum, refusal of unsafe archives, clear failures."""

import functools
import http.server
import os
import socket
import tarfile
import threading
import time
import zipfile

import pytest

from mmolre import MmolreError
from mmolre.fetch import Manifest, fetch, import_archive, safe_extract, sha256


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; `cut_after` bytes of a full response, then drops the connection."""

    cut_after: int | None = None
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if RangeHandler.cut_after is not None and not start:
            self.wfile.write(body[:RangeHandler.cut_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    RangeHandler.cut_after, RangeHandler.requests = None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_after_a_cut(server, tmp_path):
    root, base = server
    payload = os.urandom(300_000)
    (root / "big.bin").write_bytes(payload)
    RangeHandler.cut_after = 100_000
    with pytest.raises(MmolreError, match="big.bin is unreachable"):
        fetch(f"{base}/big.bin", tmp_path / "big.bin", retries=1)
    assert not (tmp_path / "big.bin").exists()  # nothing a later stage would take as complete
    assert (tmp_path / "big.bin.part").stat().st_size == 100_000
    RangeHandler.cut_after = None
    fetch(f"{base}/big.bin", tmp_path / "big.bin", retries=1)
    assert (tmp_path / "big.bin").read_bytes() == payload
    assert RangeHandler.requests[-1] == "bytes=100000-"  # the second request asked only for the rest


def test_missing_file_fails_at_once_naming_the_url(server, tmp_path):
    _, base = server
    with pytest.raises(MmolreError, match=r"/nope.zip: HTTP 404"):
        fetch(f"{base}/nope.zip", tmp_path / "nope.zip")


def test_unreachable_host_fails_in_seconds_with_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(MmolreError) as err:
        fetch(f"http://127.0.0.1:{port}/CMU_MOSI.zip", tmp_path / "x.zip", retries=3, backoff_s=0.2)
    assert time.perf_counter() - started < 10
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/CMU_MOSI.zip is unreachable" in message
    assert "--from-archive" in message and "data.mirror" in message


def test_manifest_records_then_catches_corruption(tmp_path):
    file = tmp_path / "labels.csd"
    file.write_bytes(b"good bytes")
    manifest = Manifest(tmp_path / "MANIFEST.json")
    manifest.verify_or_record(file, "http://example/labels.csd")
    again = Manifest(tmp_path / "MANIFEST.json")
    assert again.entries["labels.csd"] == {"sha256": sha256(file), "size": 10, "source": "http://example/labels.csd"}
    again.verify_or_record(file, "x")  # unchanged: fine
    file.write_bytes(b"evil bytes")
    with pytest.raises(MmolreError, match="labels.csd: SHA-256 .* does not match"):
        again.verify_or_record(file, "x")
    assert not file.exists() and (tmp_path / "labels.csd.corrupt").exists()


def test_import_archive_links_the_users_file(tmp_path):
    source = tmp_path / "mine.zip"
    source.write_bytes(b"zip")
    dest = import_archive(source, tmp_path / "cache" / "CMU_MOSI.zip")
    assert dest.read_bytes() == b"zip"
    with pytest.raises(MmolreError, match="no such file"):
        import_archive(tmp_path / "missing.zip", tmp_path / "cache" / "x.zip")


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil.txt", "ok/../../escape.txt"])
def test_zip_members_that_escape_are_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("Raw/fine.txt", "fine")
        z.writestr(name, "escape")
    with pytest.raises(MmolreError, match="refusing member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "Raw").exists()  # checked before anything is written
    assert not (tmp_path / "escape.txt").exists()


def test_tar_links_are_refused_and_good_archives_unpack(tmp_path):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as t:
        link = tarfile.TarInfo("Raw/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    with pytest.raises(MmolreError, match="refusing member 'Raw/link'"):
        safe_extract(archive, tmp_path / "out")
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("Raw/Audio/a.wav", b"RIFF")
    safe_extract(good, tmp_path / "out2")
    assert (tmp_path / "out2" / "Raw" / "Audio" / "a.wav").read_bytes() == b"RIFF"

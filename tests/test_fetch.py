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
from mmolre.fetch import Manifest, fetch, fetch_members, import_archive, safe_extract, sha256


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files. `mode`: "legacy" answers an open range `bytes=N-` with N > 0 (and a range from 0
    with the whole file, as some servers do); "full" honours `bytes=A-B` with 206 + Content-Range;
    "ignore" always sends the whole file. `cut_after`: bytes of a whole-file response before the
    connection drops; `cut_at`: a file offset at which the next response covering it drops once.
    `sent` counts body bytes sent."""

    mode = "legacy"
    cut_after: int | None = None
    cut_at: int | None = None
    requests: list = []
    sent = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        RangeHandler.requests.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        asked = self.headers.get("Range") if RangeHandler.mode != "ignore" else None
        start, end = 0, len(data) - 1
        if asked:
            first, _, last = asked.split("=")[1].partition("-")
            start, end = int(first), min(int(last), len(data) - 1) if last else len(data) - 1
        if start >= len(data):
            self.send_error(416)
            return
        partial = bool(asked) and (RangeHandler.mode == "full" or start > 0)
        if not partial:
            start, end = 0, len(data) - 1
        self.send_response(206 if partial else 200)
        if partial and RangeHandler.mode == "full":
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end + 1 - start))
        self.end_headers()
        body = data[start:end + 1]
        cut = (RangeHandler.cut_after if not start else None)
        if RangeHandler.cut_at is not None and start < RangeHandler.cut_at <= end:
            cut, RangeHandler.cut_at = RangeHandler.cut_at - start, None
        if cut is not None:
            RangeHandler.sent += cut  # counted before the client can see the bytes
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        RangeHandler.sent += len(body)
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    RangeHandler.mode, RangeHandler.cut_after, RangeHandler.cut_at = "legacy", None, None
    RangeHandler.requests, RangeHandler.sent = [], 0
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
    entry = manifest.verify(file)  # a new file: nothing recorded until the caller says it proved good
    assert entry == {"sha256": sha256(file), "size": 10} and not (tmp_path / "MANIFEST.json").exists()
    manifest.record("labels.csd", {**entry, "source": "http://example/labels.csd"})
    again = Manifest(tmp_path / "MANIFEST.json")
    assert again.entries["labels.csd"] == {"sha256": sha256(file), "size": 10, "source": "http://example/labels.csd"}
    assert again.verify(file) is None  # known and unchanged: fine
    file.write_bytes(b"evil bytes")
    with pytest.raises(MmolreError, match="labels.csd: SHA-256 .* does not match"):
        again.verify(file)
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


def archive_with_video(path, audio: dict[str, bytes]) -> int:
    """A zip like CMU_MOSEI.zip: a few needed members (stored, so a flipped byte reaches the CRC
    check), and video members making up most of its bytes. Returns the video bytes."""
    video = {f"Raw/Video/Full/v{i}.mp4": os.urandom(400_000) for i in range(5)}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**video, **audio}.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return sum(map(len, video.values()))


NEEDED_AUDIO = {f"Raw/Audio/Full/WAV_16000/a{i}.wav": os.urandom(30_000) for i in range(4)}


def is_audio(name: str) -> bool:
    return "/Audio/" in name


def test_selective_download_transfers_only_the_needed_members(server, tmp_path):
    root, base = server
    RangeHandler.mode = "full"
    video_bytes = archive_with_video(root / "CMU_MOSEI.zip", NEEDED_AUDIO)
    size = (root / "CMU_MOSEI.zip").stat().st_size
    got = fetch_members(f"{base}/CMU_MOSEI.zip", tmp_path / "members", is_audio, backoff_s=0.01)
    for name, data in NEEDED_AUDIO.items():
        assert (tmp_path / "members" / name).read_bytes() == data
    assert not list((tmp_path / "members").rglob("*.mp4"))
    needed = sum(map(len, NEEDED_AUDIO.values()))
    assert got["members"] == 4 and needed <= got["bytes_needed"] < needed + 1000
    # what crossed the network: the needed members, their local headers, the central directory
    assert needed <= RangeHandler.sent == got["bytes_received"] + 1 < needed + 2000  # + the probe's byte
    assert RangeHandler.sent < (size - video_bytes) * 1.05
    RangeHandler.sent = 0
    again = fetch_members(f"{base}/CMU_MOSEI.zip", tmp_path / "members", is_audio, backoff_s=0.01)
    assert again["members"] == 4 and RangeHandler.sent < 2000  # intact members are not fetched again


def served_archive(root, member: str) -> zipfile.ZipInfo:
    """A CMU_MOSEI-like archive served with full Range support; the ZipInfo of one of its needed members."""
    RangeHandler.mode = "full"
    archive_with_video(root / "CMU_MOSEI.zip", NEEDED_AUDIO)
    with zipfile.ZipFile(root / "CMU_MOSEI.zip") as z:
        return z.getinfo(f"Raw/Audio/Full/WAV_16000/{member}")


def test_selective_download_survives_a_cut_mid_member(server, tmp_path):
    root, base = server
    member = served_archive(root, "a2.wav")
    RangeHandler.cut_at = member.header_offset + 10_000  # inside the member's data
    fetch_members(f"{base}/CMU_MOSEI.zip", tmp_path / "members", is_audio, backoff_s=0.01)
    assert (tmp_path / "members/Raw/Audio/Full/WAV_16000/a2.wav").read_bytes() == NEEDED_AUDIO[member.filename]
    resumed = [r for r in RangeHandler.requests if r and int(r[6:].split("-")[0]) > member.header_offset + 9_000
               and int(r[6:].split("-")[0]) <= member.header_offset + 10_000 + 200]
    assert resumed, RangeHandler.requests  # the retry asked from where the cut stopped, not from the start


def test_selective_download_refuses_a_member_with_a_bad_crc(server, tmp_path):
    root, base = server
    member = served_archive(root, "a1.wav")
    data = bytearray((root / "CMU_MOSEI.zip").read_bytes())
    data[member.header_offset + 30 + len(member.filename) + 500] ^= 0xFF  # one byte of its payload
    (root / "CMU_MOSEI.zip").write_bytes(bytes(data))
    with pytest.raises(MmolreError, match=r"member Raw/Audio/Full/WAV_16000/a1.wav is corrupt \(Bad CRC-32"):
        fetch_members(f"{base}/CMU_MOSEI.zip", tmp_path / "members", is_audio, backoff_s=0.01)
    assert not (tmp_path / "members/Raw/Audio/Full/WAV_16000/a1.wav").exists()
    assert not list((tmp_path / "members").rglob("*.part"))


def test_selective_download_falls_back_when_range_is_ignored(server, tmp_path):
    root, base = server
    RangeHandler.mode = "ignore"
    archive_with_video(root / "CMU_MOSEI.zip", NEEDED_AUDIO)
    assert fetch_members(f"{base}/CMU_MOSEI.zip", tmp_path / "members", is_audio, backoff_s=0.01) is None
    assert not (tmp_path / "members").exists()


class KeepAliveHandler(RangeHandler):
    """RangeHandler speaking HTTP/1.1 with keep-alive; `connections` counts the TCP connections accepted."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each small response waits for a delayed ACK (40 ms)
    connections = 0

    def setup(self):
        KeepAliveHandler.connections += 1
        super().setup()


def test_a_selective_download_is_one_pooled_client_and_one_request_per_member(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    members = {f"Raw/Audio/Full/WAV_16000/a{i:03d}.wav": os.urandom(2_000 + i) for i in range(200)}
    with zipfile.ZipFile(root / "CMU_MOSEI.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    RangeHandler.mode, RangeHandler.cut_after, RangeHandler.cut_at = "full", None, None
    RangeHandler.requests, KeepAliveHandler.connections = [], 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(KeepAliveHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        got = fetch_members(f"http://127.0.0.1:{httpd.server_address[1]}/CMU_MOSEI.zip", tmp_path / "out", is_audio)
    finally:
        httpd.shutdown()
    assert got["members"] == 200
    assert all((tmp_path / "out" / name).read_bytes() == data for name, data in members.items())
    directory = len(RangeHandler.requests) - 200  # the probe and zipfile's reads of the central directory
    assert 0 < directory <= 6, RangeHandler.requests[:10]
    assert KeepAliveHandler.connections <= 2  # urllib opened one per request (the issue counted 604 for 200 members)

"""CMU-MOSEI from the MMSA release joined to CMU_MOSEI_Labels.csd for its emotions, the label sources
(official host, mirror, Hugging Face hub) on local servers, and dead hosts answered in one line."""

import hashlib
import http.server
import json
import threading
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from mmolre import EMOTIONS
from mmolre.datasets import sdk
from mmolre.download import download
from mmolre.prepare import prepare

from test_cmu import write_csd, write_mp4
from test_fetch import server  # noqa: F401  (the HTTP server fixture)

# The label rows (the SDK's layout: sentiment, then happy, sad, anger, surprise, disgust, fear), per video
# in stored order; clip = the transcript segment number. vidA is stored in clip-id string order (10, 13,
# 2, 3) and clip 13 starts before 0 s (MMSA's clip is cut from 0 s); vidB's clips 0 and 1 have equal
# sentiment and lengths 0.3 s apart, and its row 2 has no MMSA clip; vidC's clip 1 and vidD have no row.
ROWS = {
    "vidA0000001": [("10", 6.0, 7.2, [0.5, 0, 0, 0, 0, 0, 1.0]), ("13", -0.3, 0.8, [-1.0, 0, 0, 2.0, 0, 0, 0]),
                    ("2", 1.0, 3.0, [1.0, 2.0, 0, 0, 0, 0.33, 0]), ("3", 3.5, 5.0, [-2.0, 0, 1.5, 0.5, 0, 0, 0])],
    "vidB0000002": [("0", 0.0, 2.0, [1.0, 1.0, 0, 0, 0, 0, 0]), ("1", 3.0, 5.3, [1.0, 0, 0, 0, 2.0, 0, 0]),
                    ("2", 6.0, 9.0, [-0.5, 0, 0.67, 0, 0, 0, 0])],
    "vidC0000003": [("0", 0.0, 1.5, [0.0, 0, 0, 0, 0, 0, 0])],
}
# MMSA's clips: (video, clip, text, label, mode, seconds). vidA_3's label differs from its row's (-2.0), as
# MMSA-FET #29 reports for some clips.
CLIPS = [("vidA0000001", "2", "i really liked the movie", 1.0, "train", 2.0),
         ("vidA0000001", "3", "the ending was terrible", -1.8, "train", 1.5),
         ("vidA0000001", "10", "just fine overall", 0.5, "train", 1.2),
         ("vidA0000001", "13", "so this is it", -1.0, "train", 0.8),
         ("vidB0000002", "0", "first clip of video b", 1.0, "valid", 2.0),
         ("vidB0000002", "1", "second clip of video b", 1.0, "valid", 2.3),
         ("vidC0000003", "0", "nothing to say", 0.0, "test", 1.5),
         ("vidC0000003", "1", "a clip the labels lack", 0.3, "test", 2.6),
         ("vidD0000004", "0", "a video the labels lack", -0.6, "test", 1.0)]
TRANSCRIPT_TIMES = {"vidC0000003": {"1": (3.0, 5.6)}, "vidD0000004": {"0": (0.0, 1.0)}}
EXPECTED = {f"{v}_{c}": f for v, rows in ROWS.items() for c, _, _, f in rows}


@pytest.fixture(scope="module")
def mmsa_mosei(tmp_path_factory):
    """MMSA's MOSEI folder (label.csv in its MOSEI column order, mp4 clips) and the SDK files beside it."""
    root = tmp_path_factory.mktemp("mmsa")
    mosei = root / "MOSEI"
    rows = ["video_id,clip_id,text,label,annotation,mode,label_T,label_A,label_V"]
    for video, clip, text, label, mode, seconds in CLIPS:
        write_mp4(mosei / "Raw" / video / f"{clip}.mp4", seconds)
        rows.append(f"{video},{clip},{text},{label},Positive,{mode},,,")
    (mosei / "label.csv").write_text("\n".join(rows) + "\n")
    sdk_files = root / "sdk"
    sdk_files.mkdir()
    write_csd(sdk_files / "CMU_MOSEI_Labels.csd", "All Labels",
              {v: ([f for *_, f in rows], [[s, e] for _, s, e, _ in rows]) for v, rows in ROWS.items()})
    text_of = {(v, c): t for v, c, t, *_ in CLIPS}
    with zipfile.ZipFile(sdk_files / "CMU_MOSEI.zip", "w") as z:  # an old copy: only its transcripts are read
        for video in {v for v, *_ in CLIPS}:
            segments = [(c, s, e) for c, s, e, _ in ROWS.get(video, [])]
            segments += [(c, s, e) for c, (s, e) in TRANSCRIPT_TIMES.get(video, {}).items()]
            z.writestr(f"Raw/Transcript/Segmented/Combined/{video}.txt", "".join(
                f"{video}___{c}___{s}___{e}___{text_of.get((video, c), 'words nobody clipped')}\n" for c, s, e in segments))
        z.writestr("Raw/Audio/Full/WAV_16000/vidA0000001.wav", b"audio we do not unpack")
    words = {}
    for video, rows in ROWS.items():  # one word per row, spread over each row's interval
        tokens, spans = [], []
        for c, s, e, _ in rows:
            said = (text_of.get((video, c)) or "words nobody clipped").split()
            step = (e - max(s, 0)) / len(said)
            tokens += [[w.encode()] for w in [*said, "sp"]]
            spans += [[max(s, 0) + k * step, max(s, 0) + (k + 1) * step] for k in range(len(said))] + [[e, e]]
        words[video] = (np.array(tokens, dtype="S32"), spans)
    with h5py.File(sdk_files / "CMU_MOSEI_TimestampedWords.csd", "w") as f:
        for video, (tokens, spans) in words.items():
            group = f.require_group("words/data").create_group(video)
            group["features"], group["intervals"] = tokens, np.array(spans)
    return root


def params_for(dataset="mosei", **data):
    return {"data": {"dataset": dataset, "seed": 1, "mirror": None, "mmsa_root": None, "labels_hub": None,
                     "archives": [], **data},
            "prepare": {"on_invalid": "fail", "duration_tolerance_s": 0.25, "mmsa_duration_tolerance_s": 0.25}}


def prepared(root, tmp_path, evidence=()):
    archives = [root / "sdk" / "CMU_MOSEI_Labels.csd", *(root / "sdk" / name for name in evidence)]
    download(params_for(mmsa_root=str(root / "MOSEI"), archives=[str(a) for a in archives]),
             tmp_path / "raw", tmp_path / "downloads")
    out = prepare(params_for(), tmp_path / "raw", tmp_path / "prepared")
    return pd.read_parquet(out / "utterances.parquet").set_index("utterance_id"), (out / "counts.txt").read_text()


def assert_own_emotions(table, matched):
    for utterance in table.index:
        emotions = table.loc[utterance, list(EMOTIONS)].to_numpy(dtype=float)
        if utterance in matched:
            assert emotions == pytest.approx(EXPECTED[utterance][1:]), utterance
        else:
            assert np.isnan(emotions).all(), utterance


def test_length_and_sentiment_match_what_they_can_and_name_the_rest(mmsa_mosei, tmp_path):
    table, counts = prepared(mmsa_mosei, tmp_path)
    assert len(table) == len(CLIPS) and table.sentiment.tolist() == [c[3] for c in CLIPS]  # MMSA's labels
    assert table.end_s.tolist() == pytest.approx([c[5] for c in CLIPS], abs=0.06)  # AAC framing
    matched = {"vidA0000001_2", "vidA0000001_10", "vidA0000001_13", "vidC0000003_0"}
    assert_own_emotions(table, matched)
    assert ("4 of 9 clips matched to their own row (by length and sentiment: 4); 4 rows matched by no clip"
            in counts)
    assert "no emotions for 5 clip(s) (ambiguous: 2, no label row: 2, contradicted: 1):" in counts
    assert "  vidB0000002_0: ambiguous: 2 rows fit (length and sentiment)" in counts
    assert "  vidB0000002_1: ambiguous: 2 rows fit (length and sentiment)" in counts
    assert "  vidA0000001_3: contradicted: 4 row(s) near its length, whose sentiment" in counts and "is not its label -1.800" in counts
    assert "  vidC0000003_1: no label row: none of its length (2.6" in counts
    assert "  vidD0000004_0: no label row: its video is not in the label sequence" in counts
    manifest = json.loads((tmp_path / "raw/mosei/MANIFEST.json").read_text())
    assert manifest["CMU_MOSEI_Labels.csd"]["source"].startswith("file:")


@pytest.mark.parametrize("evidence, how", [(["CMU_MOSEI.zip"], "transcript times"),
                                           (["CMU_MOSEI_TimestampedWords.csd"], "word timings")])
def test_transcripts_or_word_timings_resolve_the_ambiguous_pair(mmsa_mosei, tmp_path, evidence, how):
    table, counts = prepared(mmsa_mosei, tmp_path, evidence)
    matched = set(EXPECTED) & set(table.index)
    assert_own_emotions(table, matched)
    assert f"7 of 9 clips matched to their own row (by {how}: 7); 1 rows matched by no clip" in counts
    assert ("MMSA's label differs from the row's sentiment for 1 of the 7 clips matched without using it "
            "(the sentiment used is MMSA's label): vidA0000001_3 -1.800 vs -2.000") in counts
    assert "  vidD0000004_0: no label row: its video is not in the label sequence" in counts
    if how == "transcript times":
        assert "  vidC0000003_1: no label row: none at its transcript times [3.00, 5.60] s" in counts
        assert not (tmp_path / "raw/mosei/Raw/Audio").exists()  # only the transcripts of the old archive


def test_time_order_resolves_a_pair_only_when_it_accounts_for_every_clip_and_row():
    from mmolre.datasets.mmsa import Evidence, match_clips

    rows = ROWS["vidB0000002"][:2]
    labels = {"vidB0000002": (np.array([f for *_, f in rows], np.float32), np.array([[s, e] for _, s, e, _ in rows]))}
    clips = pd.DataFrame({"utterance": ["vidB0000002_1", "vidB0000002_0"], "video_id": "vidB0000002",
                          "clip_id": ["1", "0"], "text": ["b", "a"], "label": [1.0, 1.0], "seconds": [2.31, 2.02]})
    found = match_clips(clips, Evidence(labels))
    assert found == {"vidB0000002_0": (0, "length and sentiment, time order"),
                     "vidB0000002_1": (1, "length and sentiment, time order")}
    with_extra = {"vidB0000002": (np.vstack([labels["vidB0000002"][0], [[1.0, 0, 0, 0, 0, 0, 0]]]),
                                  np.vstack([labels["vidB0000002"][1], [[6.0, 8.1]]]))}  # a row with no clip
    assert {u: row for u, (row, _) in match_clips(clips, Evidence(with_extra)).items()} == \
        {"vidB0000002_0": None, "vidB0000002_1": None}
    swapped = clips.assign(seconds=[2.02, 2.31])  # the order contradicts the lengths: it proves nothing
    assert {u: row for u, (row, _) in match_clips(swapped, Evidence(labels)).items()} == \
        {"vidB0000002_0": None, "vidB0000002_1": None}


class Forbidden(http.server.BaseHTTPRequestHandler):
    """A host that no longer serves anything: 403 for every request, as CMU's raw_datasets folder does."""

    def do_GET(self):
        self.send_error(403)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The two Hugging Face hub endpoints huggingface_hub uses to find and fetch a dataset file: the tree
    listing and resolve (HEAD for the commit and size, GET for the bytes). `files`: repo path -> bytes."""

    files: dict = {}
    commit = "0123456789abcdef0123456789abcdef01234567"

    def do_GET(self, body=True):
        path = self.path.split("?")[0]
        if path.startswith("/api/datasets/owner/copy/tree/"):
            data = json.dumps([{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                               for p, b in FakeHub.files.items()]).encode()
            headers = {"Content-Type": "application/json"}
        elif path.startswith("/datasets/owner/copy/resolve/") and path.split("/", 6)[6] in FakeHub.files:
            data = FakeHub.files[path.split("/", 6)[6]]
            headers = {"X-Repo-Commit": FakeHub.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        else:
            self.send_error(404)
            return
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET(body=False)

    def log_message(self, *args):
        pass


@pytest.fixture()
def local(request):
    """Start a handler class on 127.0.0.1; returns its base URL."""
    servers = []

    def start(handler):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()


def test_a_dead_official_host_is_one_line_naming_the_mmsa_route(local, tmp_path, capsys, monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    monkeypatch.setattr(sdk, "HOST", local(Forbidden))
    monkeypatch.chdir(ROOT)
    code = main(["download", "--set", "data.dataset=mosei", "--raw-root", str(tmp_path / "raw"),
                 "--downloads", str(tmp_path / "downloads")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("mmolre download: error: CMU_MOSEI.zip: CMU no longer distributes the raw archives")
    assert "--from-mmsa PATH" in err and "--from-archive PATH" in err and "HTTP 403" in err
    assert not (tmp_path / "raw").exists() and not list((tmp_path / "downloads").glob("*.zip*"))


def test_labels_from_the_official_host_a_mirror_or_the_hub_say_where_they_came_from(
        mmsa_mosei, server, local, tmp_path, monkeypatch):  # noqa: F811
    served, base = server
    csd = (mmsa_mosei / "sdk/CMU_MOSEI_Labels.csd").read_bytes()
    (served / "CMU-MOSEI/labels").mkdir(parents=True)
    (served / "CMU-MOSEI/labels/CMU_MOSEI_Labels.csd").write_bytes(csd)
    (served / "CMU_MOSEI_Labels.csd").write_bytes(csd)  # the mirror: files by name
    FakeHub.files = {"README.md": b"unofficial copy", "labels/CMU_MOSEI_Labels.csd": csd}
    hub = local(FakeHub)
    monkeypatch.setenv("HF_ENDPOINT", hub)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    dead = local(Forbidden)
    cases = {"official": (base, None, None), "mirror": (dead, base, None), "hub": (dead, None, "owner/copy@main")}
    for case, (host, mirror, hub_id) in cases.items():
        monkeypatch.setattr(sdk, "HOST", host)
        work = tmp_path / case
        download(params_for(mmsa_root=str(mmsa_mosei / "MOSEI"), mirror=mirror, labels_hub=hub_id),
                 work / "raw", work / "downloads")
        entry = json.loads((work / "raw/mosei/MANIFEST.json").read_text())["CMU_MOSEI_Labels.csd"]
        assert entry["sha256"] == hashlib.sha256(csd).hexdigest() and entry["size"] == len(csd)
        counts = (prepare(params_for(), work / "raw", work / "prepared") / "counts.txt").read_text()
        expected = {"official": f"{base}/CMU-MOSEI/labels/CMU_MOSEI_Labels.csd", "mirror": f"{base}/CMU_MOSEI_Labels.csd",
                    "hub": f"hf://owner/copy@{FakeHub.commit}/labels/CMU_MOSEI_Labels.csd"}[case]
        assert entry["source"] == expected, case
        assert f"source: CMU_MOSEI_Labels.csd from {expected} (SHA-256 {entry['sha256'][:16]}" in counts
        assert ("unofficial" in entry) == (case == "hub") and ("an unofficial copy" in counts) == (case == "hub")
        if case == "hub":
            from mmolre.report import data_section

            assert entry["revision"] == FakeHub.commit and f"revision {FakeHub.commit}" in counts
            section = data_section(work / "prepared/mosei/counts.txt")  # the report names it unofficial
            assert f"**Unofficial source.** source: CMU_MOSEI_Labels.csd from {expected}" in section[2]


def test_the_joint_cmu_setting_trains_msa_and_mer_from_the_mmsa_release(mmsa_mosei, tmp_path, tiny_params):
    """MMSA's MOSI/ and MOSEI/ plus the MOSEI csd: one model, MSA on both corpora, MER on MOSEI."""
    from mmolre.evaluate import evaluate
    from mmolre.featurize import featurize
    from mmolre.train import train

    mosi = mmsa_mosei / "MOSI"
    if not mosi.exists():
        rows = ["video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"]
        for k, (mode, label) in enumerate([("train", 2.0), ("train", -1.0), ("valid", 0.4), ("test", -2.2)]):
            write_mp4(mosi / "Raw" / f"mosi{k:07d}" / "1.mp4", 1.0 + 0.2 * k)
            rows.append(f"mosi{k:07d},1,clip number {k},{label},,,,Positive,{mode}")
        (mosi / "label.csv").write_text("\n".join(rows) + "\n")
    data = {"mmsa_root": str(mmsa_mosei), "archives": [str(mmsa_mosei / "sdk/CMU_MOSEI_Labels.csd")]}
    download(params_for("cmu", **data), tmp_path / "raw", tmp_path / "downloads")
    table = pd.read_parquet(prepare(params_for("cmu"), tmp_path / "raw", tmp_path / "prepared") / "utterances.parquet")
    assert table.groupby("dataset").size().to_dict() == {"mosi": 4, "mosei": len(CLIPS)}
    assert table[table.dataset == "mosei"].happy.notna().sum() == 4 and table[table.dataset == "mosi"].happy.isna().all()

    params = {**tiny_params, "data": {**tiny_params["data"], "dataset": "cmu"},
              "train": {**tiny_params["train"], "epochs": 1}, "runs": {"main": {"modalities": ["text", "audio"]}}}
    featurize(params, tmp_path / "prepared", tmp_path / "raw", tmp_path / "features")
    train(params, "main", tmp_path / "features", tmp_path / "models", tmp_path / "curves")
    metrics = evaluate(params, tmp_path / "features", tmp_path / "models", tmp_path / "reports")["main"]
    assert set(metrics) == {"mosi", "mosei"} and set(metrics["mosei"]) == {"msa", "mer"}
    assert set(metrics["mosei"]["mer"]) == {*EMOTIONS, "avg"}


TOY = '''
"""A dataset in one module: three speakers' clips of silence and a tone (a test's own corpus)."""
import numpy as np, pandas as pd, soundfile as sf
from mmolre.datasets import CorpusTable

CORPORA = ("toy",)


def download(params, target, downloads, archives=()):
    for k, split in enumerate(["train", "valid", "test"]):
        sf.write(target / f"spk{k}_0.wav", np.sin(np.arange(8000) * (0.05 + 0.01 * k)).astype("float32"), 16000)
    pd.DataFrame({"utterance_id": [f"spk{k}_0" for k in range(3)], "split": ["train", "valid", "test"]}).to_csv(
        target / "clips.csv", index=False)


def tables(params, folder, raw_root):
    clips = pd.read_csv(folder / "clips.csv")
    rows = [{"utterance_id": u, "video_id": u[:4], "dataset": "toy", "split": s, "start_s": 0.0, "end_s": 0.5,
             "audio_path": f"toy/{u}.wav", "text": "a tone", "sentiment": 0.5} for u, s in zip(clips.utterance_id, clips.split)]
    return [CorpusTable(pd.DataFrame(rows))]
'''


def test_a_new_dataset_is_one_module_plus_its_name(tmp_path, monkeypatch, capsys):
    from conftest import ROOT
    from mmolre import params
    from mmolre.cli import main
    from mmolre.datasets import DATASETS, registry

    (tmp_path / "toy_dataset.py").write_text(TOY)  # the module (here outside mmolre/datasets/, so its path too) ...
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(params, "DATASETS", (*DATASETS, "toy"))  # ... and its name
    monkeypatch.setitem(registry.MODULES, "toy", "toy_dataset")
    monkeypatch.chdir(ROOT)
    where = ["--raw-root", str(tmp_path / "raw")]
    assert main(["download", "--set", "data.dataset=toy", *where]) == 0  # params accept it
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())  # and DVC reruns download and prepare when it changes
    assert all("mmolre/datasets" in dvc["stages"][stage]["deps"] for stage in ("download", "prepare"))
    assert main(["prepare", "--set", "data.dataset=toy", *where, "--out-root", str(tmp_path / "prepared")]) == 0
    table = pd.read_parquet(tmp_path / "prepared/toy/utterances.parquet")
    assert table.utterance_id.tolist() == ["spk0_0", "spk1_0", "spk2_0"] and table.happy.isna().all()
    monkeypatch.setattr(params, "DATASETS", DATASETS)
    assert main(["download", "--set", "data.dataset=toy", *where]) == 2
    assert ("params data.dataset='toy': Input should be 'demo', 'mosi', 'mosei', 'cmu', 'sims', 'sims2', 'meld', "
            "'iemocap' or 'custom'") in capsys.readouterr().err


def test_mosei_from_mmsa_without_a_label_source_is_one_line_naming_the_routes(mmsa_mosei, local, tmp_path, capsys,
                                                                               monkeypatch):
    from conftest import ROOT
    from mmolre.cli import main

    monkeypatch.setattr(sdk, "HOST", local(Forbidden))
    monkeypatch.chdir(ROOT)
    code = main(["download", "--set", "data.dataset=mosei", "--from-mmsa", str(mmsa_mosei / "MOSEI"),
                 "--raw-root", str(tmp_path / "raw"), "--downloads", str(tmp_path / "downloads")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("mmolre download: error: CMU_MOSEI_Labels.csd: no source gave it (tried: ")
    assert "CMU-MOSEI/labels/CMU_MOSEI_Labels.csd: HTTP 403" in err
    assert "--from-archive PATH" in err and "data.labels_hub" in err
    assert not (tmp_path / "raw").exists()  # failed before decoding a single clip

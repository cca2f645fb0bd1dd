"""The utterance-table contract: each pandera rule caught with a bad row, named in the message."""

import shutil

import pandas as pd
import pytest

from mmolre import MmolreError
from mmolre import EMOTIONS
from mmolre.prepare import Contract, dataset_table, find_violations, prepare

DEMO = Contract(("demo",), extra={"video_path": str})  # the demo's table: its corpus, the default label space, faces
COLUMNS = ["utterance_id", "video_id", "dataset", "split", "start_s", "end_s", "audio_path", "text", "sentiment", *EMOTIONS,
           "video_path"]


@pytest.fixture()
def table(tiny_demo):
    return dataset_table(tiny_demo["params"], tiny_demo["raw"])[0]


def broken(table, row, **changes):
    bad = table.copy()
    for column, value in changes.items():
        bad.loc[row, column] = value
    return bad


def rules_for(violations, row):
    return set(violations[violations.row == row].rule)


def test_clean_demo_table_passes_with_contract_columns(table, tiny_demo):
    assert list(table.columns) == COLUMNS
    assert find_violations(table, tiny_demo["raw"], DEMO).empty
    assert (table.end_s > table.start_s).all()


@pytest.mark.parametrize("changes, rule", [
    ({"text": ""}, "must be non-empty"),
    ({"text": " padded"}, "must be stripped"),
    ({"sentiment": 3.5}, "must lie in [-3, 3]"),
    ({"fear": -0.5}, "must lie in [0, 3]"),
    ({"audio_path": "demo/audio/missing.wav"}, "audio file missing or unreadable"),
    ({"end_s": 0.0}, "end_s must be > start_s"),
    ({"start_s": -1.0}, "must be >= 0"),
    ({"utterance_id": "other_000"}, "utterance_id must be <video_id>_<clip>"),
])
def test_each_rule_names_the_bad_row(table, tiny_demo, changes, rule):
    violations = find_violations(broken(table, 3, **changes), tiny_demo["raw"], DEMO)
    assert rule in rules_for(violations, 3)
    assert set(violations.row) == {3}


def test_unknown_split_is_named(table, tiny_demo):
    violations = find_violations(broken(table, 3, split="dev"), tiny_demo["raw"], DEMO)
    assert "must be one of ['train', 'valid', 'test']" in rules_for(violations, 3)


def test_unreadable_audio_is_caught(table, tiny_demo, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_demo["raw"], raw)
    (raw / table.audio_path[2]).write_bytes(b"RIFF not really a wav")
    violations = find_violations(table, raw, DEMO)
    assert rules_for(violations, 2) == {"audio file missing or unreadable"}


def test_duplicate_id_flags_both_rows(table, tiny_demo):
    bad = broken(table, 1, utterance_id=table.utterance_id[0])
    violations = find_violations(bad, tiny_demo["raw"], DEMO)
    assert set(violations.row) == {0, 1}
    assert rules_for(violations, 1) == {"must be unique (duplicate id)"}


def corrupt_raw(tiny_demo, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_demo["raw"], raw)
    csv = raw / "demo" / "utterances.csv"
    frame = pd.read_csv(csv)
    frame.loc[4, "text"] = ""
    frame.loc[5, "sentiment"] = 7.0
    frame.to_csv(csv, index=False)
    return raw, frame


def test_stage_fails_naming_each_bad_row_and_writes_nothing(tiny_demo, tmp_path):
    raw, frame = corrupt_raw(tiny_demo, tmp_path)
    with pytest.raises(MmolreError) as err:
        prepare(tiny_demo["params"], raw, tmp_path / "prepared")
    message = str(err.value)
    assert f"row 4 (utterance_id='{frame.utterance_id[4]}'): text: must be non-empty" in message
    assert f"row 5 (utterance_id='{frame.utterance_id[5]}'): sentiment: must lie in [-3, 3] (got 7.0)" in message
    assert "prepare.on_invalid=quarantine" in message
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_quarantine_moves_bad_rows_to_rejected_csv(tiny_demo, tmp_path):
    raw, frame = corrupt_raw(tiny_demo, tmp_path)
    params = {**tiny_demo["params"], "prepare": {"on_invalid": "quarantine"}}
    out = prepare(params, raw, tmp_path / "prepared")
    kept = pd.read_parquet(out / "utterances.parquet")
    rejected = pd.read_csv(out / "rejected.csv")
    assert len(kept) == len(frame) - 2
    assert set(rejected.utterance_id) == {frame.utterance_id[4], frame.utterance_id[5]}
    assert "text: must be non-empty" in rejected.set_index("utterance_id").reasons[frame.utterance_id[4]]


def test_prepared_table_round_trips(tiny_demo):
    table = pd.read_parquet(tiny_demo["prepared"] / "demo" / "utterances.parquet")
    assert list(table.columns) == COLUMNS
    assert len(table) == 36
    assert table.utterance_id.is_unique


@pytest.mark.parametrize("on_invalid", ["fail", "quarantine"])
def test_a_video_in_two_splits_stops_prepare_in_one_line_naming_it(tiny_demo, tmp_path, on_invalid):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_demo["raw"], raw)
    csv = raw / "demo" / "utterances.csv"
    frame = pd.read_csv(csv)
    video = frame.video_id[0]
    frame.loc[0, "split"] = "test" if frame.split[0] != "test" else "train"
    frame.to_csv(csv, index=False)
    params = {**tiny_demo["params"], "prepare": {"on_invalid": on_invalid}}
    with pytest.raises(MmolreError) as err:
        prepare(params, raw, tmp_path / "prepared")
    assert str(err.value) == (f"demo's utterance table: 1 video(s) have utterances in more than one split ({video}): "
                              "the splits must be speaker-independent; fix the split, or set prepare.split_overlap=warn "
                              "to keep it (recorded in counts.txt and the report)")
    assert not (tmp_path / "prepared").exists()
    kept = {**params, "prepare": {"on_invalid": on_invalid, "split_overlap": "warn"}}
    counts = (prepare(kept, raw, tmp_path / "prepared") / "counts.txt").read_text().splitlines()
    assert counts[0] == ("split overlap: the split mmolre made (kept: prepare.split_overlap=warn) is not "
                         "video-independent: 1 video(s) span train/valid/test; results on it are not "
                         "speaker-independent")
    assert counts[1].startswith(f"  {video}: ") and len(counts) == 2

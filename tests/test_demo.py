"""The generated demo corpus: deterministic, split by speaker, labels in range, prosody real."""

import hashlib
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from mmolre import EMOTIONS, MmolreError
from mmolre.datasets.demo import (DemoConfig, VOICE_VALENCE, draw_utterance, generate, lexical_text, speech,
                         valence_lexicon)


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    # nine speakers reach the f* voices, whose breath noise eSpeak seeds from the clock unless told
    cfg = DemoConfig(speakers=9, utterances_per_speaker=1, split_speakers=(7, 1, 1))
    generate(cfg, tmp_path / "a", seed=7)
    time.sleep(1.1)
    generate(cfg, tmp_path / "b", seed=7)
    generate(cfg, tmp_path / "c", seed=8)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_corpus_layout_splits_and_label_ranges(tiny_demo):
    folder = tiny_demo["raw"] / "demo"
    table = pd.read_csv(folder / "utterances.csv")
    assert len(table) == 36
    assert table.groupby("video_id").split.nunique().max() == 1  # no speaker in two splits
    assert table.groupby("split").video_id.nunique().to_dict() == {"train": 4, "valid": 1, "test": 1}
    assert table.sentiment.between(-3, 3).all()
    assert table[list(EMOTIONS)].stack().between(0, 3).all()
    assert "## Generative rule" in (folder / "README.md").read_text()
    info = sf.info(str(folder / "audio" / f"{table.utterance_id[0]}.wav"))
    assert info.samplerate == speech().sample_rate == 22050 and info.frames > 0.5 * info.samplerate


def test_text_valence_comes_from_vader_ratings():
    rng = np.random.default_rng(0)
    text, valence = lexical_text(rng, 2.5)
    lexicon = valence_lexicon().set_index("word").valence
    words = [w.strip(",.").lower() for w in text.split() if w.strip(",.").lower() in lexicon.index]
    assert abs(valence - 2.5) <= 0.5
    assert any(abs(np.mean([lexicon[a], lexicon[b]]) - valence) < 1e-9 for a in words for b in words if a != b)


def test_neutral_text_utterances_take_their_sentiment_sign_from_the_voice():
    rng = np.random.default_rng(1)
    cfg = DemoConfig(neutral_text_share=1.0)
    draws = [draw_utterance(rng, cfg) for _ in range(300)]
    assert all(d["gen_text_valence"] == 0.0 for d in draws)
    strong = [d for d in draws if d["gen_strength"] == 3 and VOICE_VALENCE[d["gen_emotion"]] in (-1.0, 1.0)]
    assert strong and all(np.sign(d["sentiment"]) == VOICE_VALENCE[d["gen_emotion"]] for d in strong)


def test_pitch_setting_moves_the_measured_pitch():
    tts = speech()
    f0 = []
    for pitch in (20, 80):
        wave = torch.from_numpy(tts.say("I would say it was fine.", "m3", pitch, 50, 170, 100) / 32768.0).float()
        wave = torchaudio.functional.resample(wave, tts.sample_rate, 16000)
        f0.append(torchaudio.functional.detect_pitch_frequency(wave, 16000, win_length=30, freq_low=60,
                                                               freq_high=500).median().item())
    assert f0[1] > 1.2 * f0[0]


def test_split_speakers_must_add_up():
    with pytest.raises(MmolreError, match="adding up"):
        DemoConfig(speakers=5, split_speakers=(3, 1, 2))


def test_the_face_shows_the_mood_by_its_mouth_and_the_strength_by_its_brows():
    from mmolre.datasets.demo import face_frames

    def dark_rows(mood, strength, columns, rows):
        frames = face_frames(np.random.default_rng(0), mood, strength, 20)[..., 0] < 0.22 * 255  # brows, mouth
        ys = [np.flatnonzero(f[rows, columns].any(1)) + rows.start for f in frames]
        return np.mean([y.mean() for y in ys])

    corners = slice(10, 13)  # left mouth corner (x = 16 - 6 +- 1 jitter), below the eyes
    assert dark_rows(0.5, 1, corners, slice(17, 30)) < dark_rows(-0.5, 1, corners, slice(17, 30)) - 3  # smile vs frown
    brows = slice(18, 22)  # right brow, above the eyes
    assert dark_rows(0.0, 3, brows, slice(0, 12)) < dark_rows(0.0, 1, brows, slice(0, 12)) - 1.5  # raised by k

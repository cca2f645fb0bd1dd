"""The `demo` corpus: real synthesized speech with labels that need both text and voice.

Generated offline and deterministically from a seed (eSpeak NG through `espeakng-loader`,
word valence from the VADER lexicon shipped in `vadersentiment`). The generative rule,
also written to `data/raw/demo/README.md`:

1. Speakers. Each speaker is one eSpeak voice variant with its own baseline pitch and
   speaking rate, and is one "video": splits are drawn by speaker.
2. Per utterance, a latent emotion e (neutral, happy, sad, anger, surprise, disgust,
   fear) and a strength k in {1, 2, 3}.
3. Voice. The speaker's baseline prosody is shifted by k times e's profile
   (PROSODY: pitch, pitch range, rate, volume), plus jitter; the voice carries arousal
   and the emotion category, and the sign of e's valence (VOICE_VALENCE).
4. Text. With probability `neutral_text_share` the transcript is a neutral sentence
   (text valence 0: only the voice tells the label). Otherwise two words are drawn from
   the VADER lexicon whose human ratings (-4..4) lie near a target valence whose sign
   follows e (random for neutral) and whose size is uniform in [0.5, 3]; the text valence
   is the mean rating of the two words. Words are picked by valence only, so text
   cannot tell sad from anger from fear: the voice must.
5. Labels, as the CMU corpora average annotators (steps of 1/3):
   sentiment = mean of 3 ratings round(clip(s + N(0, 0.4), -3, 3)) with
   s = 0.6 * text valence + 0.6 * k * VOICE_VALENCE[e] + N(0, 0.25);
   emotion e's intensity = mean of 3 ratings clip(round(k + N(0, 0.5)), 0, 3);
   happy and sad also get 0.3 * |text valence| from positive and negative words
   (rounded ratings, so weak words leave them absent); all other intensities are 0.
6. Face (`video/<utterance_id>.mp4`, FACE_SIZE px square at FACE_FPS, as long as the speech). A drawn face
   whose expression carries what neither the words nor the voice do: the mouth's corners rise with the
   mood term m ~ N(0, 0.25) of step 5's sentiment (up to 4 px at m = 0.5; a frown when m < 0), and the
   eyebrows are raised by the strength k (1 px per step; the voice shows k only through jittered prosody).
   The head moves by up to 1 px per frame and every pixel gets noise, so no one frame is exact. The face
   is drawn with its own seeded generator: steps 1-5, and so the labels, are those of the corpus without it.

The constants below are the whole rule; `generate` applies it.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import multiprocessing
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from mmolre import EMOTIONS, MmolreError
from mmolre.datasets import VIDEO_COLUMNS, CorpusTable
from mmolre.datasets.sdk import check_archive_names
from mmolre.files import audio_duration
from mmolre.params import build

EMOTION_PRIOR = {"neutral": 0.25, "happy": 0.20, "sad": 0.15, "anger": 0.12,
                 "surprise": 0.10, "disgust": 0.08, "fear": 0.10}
# Shift per unit of strength k: (pitch, pitch range, rate in words/min, volume), eSpeak units.
PROSODY = {"neutral": (0, 0, 0, 0), "happy": (7, 10, 12, 12), "sad": (-7, -12, -18, -18),
           "anger": (3, 6, 15, 30), "surprise": (13, 16, 3, 10), "disgust": (-5, 5, -14, 6),
           "fear": (11, -10, 22, -10)}
VOICE_VALENCE = {"neutral": 0.0, "happy": 1.0, "sad": -1.0, "anger": -1.0, "surprise": 0.5,
                 "disgust": -1.0, "fear": -0.8}
VOICES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy",
          "Annie", "adam", "belinda", "benjamin", "david", "ed", "edward", "john", "linda", "max")
LEXICAL_TEMPLATES = ("{pre}, I would call it {w1} and {w2}.", "{pre}, the whole thing felt {w1}, even {w2}.",
                     "{pre}, my word for it is {w1}, maybe {w2}.", "{pre}, it was {w1} and rather {w2}.")
PREFIXES = ("so", "well", "about the movie", "after the first hour", "looking back", "to be fair",
            "in the end", "about the story")
NEUTRAL_TEMPLATES = ("I watched it on {day} with {person}.", "The film starts at {time} near the {place}.",
                     "{Person} said the {thing} is in the {place}.", "We talked about the {thing} on {day}.",
                     "It was about a {thing} and a {thing2}.")
NEUTRAL_SLOTS = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "person": ("my brother", "my neighbour", "the teacher", "my cousin", "a colleague"),
    "time": ("seven", "eight thirty", "noon", "half past six"),
    "place": ("kitchen", "station", "city centre", "old building", "second room"),
    "thing": ("train", "book", "table", "report", "window", "bus", "letter", "camera"),
}
# Lexicon words left out: profanity, violence, and names of emotions (text must not tell the category).
EXCLUDED_STEMS = re.compile(
    r"fuck|shit|bitch|bastard|ass|dick|cock|fag|whore|slut|nigg|cunt|twat|wank|piss|douche|retard|rape|"
    r"kill|murder|suicid|terror|cancer|abus|crap|damn|hell|porn|sex|nazi|fascis|slave|racis|dumb|stupid|"
    r"happ|joy|sad|sorrow|ang|rage|surpris|disgust|fear|afraid|scar|terrif|fright")

SAMPLE_RATE = 22050  # what eSpeak NG produces
FACE_SIZE, FACE_FPS = 32, 5  # the face video (step 6): pixels square, frames per second
# eSpeak NG API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER = 2, 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4


@dataclass
class DemoConfig:
    speakers: int = 24
    utterances_per_speaker: int = 25
    split_speakers: tuple[int, int, int] = (16, 4, 4)
    neutral_text_share: float = 0.35
    snr_db: float = 30.0

    def __post_init__(self):
        if sum(self.split_speakers) != self.speakers or min(self.split_speakers) < 1:
            raise MmolreError(f"demo.split_speakers {list(self.split_speakers)} must be three positive "
                              f"counts adding up to demo.speakers={self.speakers}")
        if self.speakers > len(VOICES):
            raise MmolreError(f"demo.speakers={self.speakers}: at most {len(VOICES)} voices are available")


class Speech:
    """eSpeak NG through ctypes: text + prosody settings -> int16 samples at `sample_rate`."""

    def __init__(self):
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate != SAMPLE_RATE:
            raise MmolreError(f"eSpeak NG failed to initialise or changed its sample rate ({self.sample_rate} Hz)")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # keep a reference: eSpeak calls it later
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _collect(self, samples, n, _events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: str, pitch: int, pitch_range: int, rate: int, volume: int,
            noise_seed: int = 0) -> np.ndarray:
        """int16 samples; `noise_seed` seeds eSpeak's breath noise (otherwise seeded from the clock)."""
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
        if self._lib.espeak_SetVoiceByName(f"en+{voice}".encode()) != 0:
            raise MmolreError(f"eSpeak NG has no voice variant {voice!r}")
        for key, value in ((_PITCH, pitch), (_RANGE, pitch_range), (_RATE, rate), (_VOLUME, volume)):
            self._lib.espeak_SetParameter(key, int(value), 0)
        self._chunks = []
        data = text.encode()
        self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@functools.cache
def speech() -> Speech:
    return Speech()


@functools.cache
def valence_lexicon() -> pd.DataFrame:
    """VADER's human-rated words (mean rating in -4..4), filtered to plain, agreed-on, printable words."""
    path = Path(__import__("vaderSentiment").__file__).parent / "vader_lexicon.txt"
    rows = [line.split("\t")[:3] for line in path.read_text(encoding="utf-8").splitlines()]
    lex = pd.DataFrame(rows, columns=["word", "valence", "std"]).astype({"valence": float, "std": float})
    keep = (lex.word.str.fullmatch(r"[a-z]{4,}") & (lex["std"] <= 1.0) & (lex.valence.abs() >= 0.5)
            & ~lex.word.str.contains(EXCLUDED_STEMS))
    return lex[keep].sort_values("valence").reset_index(drop=True)


def lexical_text(rng: np.random.Generator, target: float) -> tuple[str, float]:
    """A sentence with two lexicon words rated near `target`; returns (text, mean rating)."""
    lex = valence_lexicon()
    near = lex[(lex.valence - target).abs() <= 0.5]
    if len(near) < 2:
        near = lex.iloc[(lex.valence - target).abs().argsort()[:20]]
    w1, w2 = near.iloc[rng.choice(len(near), 2, replace=False)].itertuples(index=False)
    template = LEXICAL_TEMPLATES[rng.integers(len(LEXICAL_TEMPLATES))]
    pre = PREFIXES[rng.integers(len(PREFIXES))]
    text = template.format(pre=pre, w1=w1.word, w2=w2.word)
    return text[0].upper() + text[1:], (w1.valence + w2.valence) / 2


def neutral_text(rng: np.random.Generator) -> str:
    pick = {k: v[rng.integers(len(v))] for k, v in NEUTRAL_SLOTS.items()}
    things = NEUTRAL_SLOTS["thing"]
    pick["thing2"] = things[(things.index(pick["thing"]) + 1 + rng.integers(len(things) - 1)) % len(things)]
    pick["Person"] = pick["person"][0].upper() + pick["person"][1:]
    return NEUTRAL_TEMPLATES[rng.integers(len(NEUTRAL_TEMPLATES))].format(**pick)


def annotate(rng: np.random.Generator, value: float, noise: float, low: float, high: float) -> float:
    """Mean of three annotators' rounded, clipped ratings of `value` (steps of 1/3)."""
    ratings = np.clip(np.round(value + rng.normal(0, noise, 3)), low, high)
    return round(float(ratings.mean()), 4)


def draw_utterance(rng: np.random.Generator, cfg: DemoConfig) -> dict:
    """The latent emotion, strength, text and labels of one utterance (no audio)."""
    emotion = rng.choice(list(EMOTION_PRIOR), p=list(EMOTION_PRIOR.values()))
    strength = 0 if emotion == "neutral" else int(rng.integers(1, 4))
    if rng.random() < cfg.neutral_text_share:
        text, text_valence = neutral_text(rng), 0.0
    else:
        sign = np.sign(VOICE_VALENCE[emotion]) or rng.choice([-1.0, 1.0])
        text, text_valence = lexical_text(rng, sign * rng.uniform(0.5, 3.0))
    mood = rng.normal(0, 0.25)  # shown only by the face (step 6)
    s = 0.6 * text_valence + 0.6 * strength * VOICE_VALENCE[emotion] + mood
    labels = {"sentiment": annotate(rng, s, 0.4, -3, 3)} | {e: 0.0 for e in EMOTIONS}
    if emotion != "neutral":
        labels[emotion] = annotate(rng, strength, 0.5, 0, 3)
    for name, valence in (("happy", max(text_valence, 0.0)), ("sad", max(-text_valence, 0.0))):
        if valence > 0:
            labels[name] = max(labels[name], annotate(rng, 0.3 * valence, 0.3, 0, 3))
    return {"text": text, "gen_emotion": str(emotion), "gen_strength": strength,
            "gen_text_valence": round(float(text_valence), 4), "gen_mood": round(float(mood), 4)} | labels


def prosody(rng: np.random.Generator, baseline: dict, emotion: str, strength: int) -> dict:
    """eSpeak settings: the speaker's baseline + strength x the emotion's profile + jitter."""
    shift = np.array(PROSODY[emotion]) * strength + rng.normal(0, (3, 4, 6, 5))
    pitch, pitch_range, rate, volume = np.array(
        [baseline["pitch"], baseline["range"], baseline["rate"], baseline["volume"]]) + shift
    return {"pitch": int(np.clip(pitch, 0, 100)), "pitch_range": int(np.clip(pitch_range, 0, 100)),
            "rate": int(np.clip(rate, 80, 450)), "volume": int(np.clip(volume, 10, 200))}


def add_noise(rng: np.random.Generator, samples: np.ndarray, snr_db: float) -> np.ndarray:
    """int16 speech -> float32 in [-1, 1] with white noise at `snr_db` below the speech RMS."""
    x = samples.astype(np.float32) / 32768.0
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    x = x + rng.normal(0, rms / 10 ** (snr_db / 20), x.shape).astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def synthesize(jobs: list[dict], paths: list[Path], noise: np.random.Generator, snr_db: float) -> None:
    """Speak each job (Speech.say's arguments) in a fresh process, which adds the noise and writes each clip to
    its path as it is made (memory stays flat however many there are).

    eSpeak NG's output depends on every call made before in the same process (it keeps
    internal state), so the corpus is only reproducible when one new process speaks
    every utterance in order, each with its own noise seed.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(_speak_all, jobs, paths, noise, snr_db).result()


def _speak_all(jobs: list[dict], paths: list[Path], noise: np.random.Generator, snr_db: float) -> None:
    tts = speech()
    for job, path in zip(tqdm(jobs, desc="demo: synthesizing", unit="utt"), paths, strict=True):
        sf.write(path, add_noise(noise, tts.say(**job), snr_db), SAMPLE_RATE, subtype="PCM_16")


def generate(cfg: DemoConfig, out_dir: Path, seed: int) -> pd.DataFrame:
    """Write `audio/<utterance_id>.wav`, `utterances.csv` and `README.md` under out_dir."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(cfg.speakers)
    n_train, n_valid, _ = cfg.split_speakers
    split_of = {int(s): "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
                for i, s in enumerate(order)}
    rows, jobs = [], []
    for spk in range(cfg.speakers):
        baseline = {"pitch": np.clip(rng.normal(50, 8), 25, 75), "range": np.clip(rng.normal(50, 8), 25, 75),
                    "rate": rng.normal(165, 12), "volume": rng.normal(100, 8)}
        for clip in range(cfg.utterances_per_speaker):
            utt = draw_utterance(rng, cfg)
            settings = prosody(rng, baseline, utt["gen_emotion"], utt["gen_strength"])
            video_id = f"spk{spk:02d}"
            rows.append({"utterance_id": f"{video_id}_{clip:03d}", "video_id": video_id, "split": split_of[spk],
                         "voice": VOICES[spk]} | utt | {f"gen_{k}": v for k, v in settings.items()})
            jobs.append({"text": utt["text"], "voice": VOICES[spk], "noise_seed": (seed * 7919 + len(jobs)) % 2**31,
                         **settings})
    table = pd.DataFrame(rows)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    synthesize(jobs, [out_dir / "audio" / f"{u}.wav" for u in table.utterance_id], np.random.default_rng([seed, 1]),
               cfg.snr_db)
    write_faces(table, out_dir / "video", np.random.default_rng([seed, 2]))
    table.to_csv(out_dir / "utterances.csv", index=False)
    (out_dir / "README.md").write_text(readme(cfg, seed, table))
    return table


def face_frames(rng: np.random.Generator, mood: float, strength: int, frames: int) -> np.ndarray:
    """(frames, FACE_SIZE, FACE_SIZE, 3) uint8: step 6's face, grey on grey."""
    n = FACE_SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n * 32  # drawn in units of a 32 px face
    rise = float(np.clip(mood * 8, -4, 4))  # mouth corners, px
    out = np.empty((frames, n, n, 3), np.uint8)
    for f in range(frames):
        cx, cy = 16 + rng.integers(-1, 2), 16 + rng.integers(-1, 2)
        img = np.full((n, n), 0.3, np.float32)
        img[((x - cx) / 11) ** 2 + ((y - cy) / 14) ** 2 <= 1] = 0.8
        for ex in (cx - 5, cx + 5):
            img[(x - ex) ** 2 + (y - cy + 3) ** 2 <= 2.5] = 0.1
        brow = (np.abs(y - (cy - 7 - strength)) <= 0.6) & (np.abs(x - cx) >= 2) & (np.abs(x - cx) <= 8)
        mouth = (np.abs(y - (cy + 7 - rise * ((x - cx) / 6) ** 2)) <= 0.9) & (np.abs(x - cx) <= 6)
        img[brow | mouth] = 0.15
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        out[f] = (img[..., None] * 255).astype(np.uint8)
    return out


def write_faces(table: pd.DataFrame, folder: Path, rng: np.random.Generator) -> None:
    """video/<utterance_id>.mp4 per utterance: its face (step 6) for as long as its speech."""
    import av
    from av.video.reformatter import VideoReformatter

    folder.mkdir(parents=True, exist_ok=True)
    to_yuv = VideoReformatter()  # one for all frames (the encoder would build a new one per frame)
    for row in tqdm(table.itertuples(index=False), total=len(table), desc="demo: drawing faces", unit="utt"):
        seconds = audio_duration(folder.parent / "audio" / f"{row.utterance_id}.wav")
        frames = face_frames(rng, row.gen_mood, row.gen_strength, max(1, int(np.ceil(seconds * FACE_FPS))))
        with av.open(str(folder / f"{row.utterance_id}.mp4"), "w") as container:
            # MPEG-4 Part 2, not H.264: libx264's output here differs from run to run, and the corpus must not
            stream = container.add_stream("mpeg4", rate=FACE_FPS, options={"qscale": "2"})
            stream.width = stream.height = FACE_SIZE
            stream.pix_fmt = "yuv420p"
            for k, image in enumerate(frames):
                frame = to_yuv.reformat(av.VideoFrame.from_ndarray(image, format="rgb24"), format="yuv420p")
                frame.pts, frame.time_base = k, Fraction(1, FACE_FPS)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())


def readme(cfg: DemoConfig, seed: int, table: pd.DataFrame) -> str:
    counts = table.split.value_counts().reindex(["train", "valid", "test"]).to_dict()
    return (f"# demo corpus (generated by `mmolre download`, seed {seed})\n\n"
            f"{cfg.speakers} speakers x {cfg.utterances_per_speaker} utterances; utterances per split: {counts}.\n"
            "Files: `audio/<utterance_id>.wav` (16-bit PCM), `video/<utterance_id>.mp4` (the face, MPEG-4),\n"
            "`utterances.csv` (text, labels, and the latent\n"
            "`gen_*` variables and eSpeak settings each utterance was made from).\n\n"
            "## Generative rule\n\n" + __doc__[__doc__.index("1. Speakers"):__doc__.index("The constants below")])


# The dataset plugin (mmolre/datasets/__init__.py)
CORPORA = ("demo",)
EXTRA_COLUMNS = VIDEO_COLUMNS


def download(params: dict, target: Path, downloads: Path | None = None, archives=()) -> None:
    """data/raw/demo/, generated (nothing to download: no --from-archive)."""
    check_archive_names(archives, (), "demo (generated here, nothing to import)")
    generate(build(DemoConfig, params, "demo"), target, seed=params["data"]["seed"])


def tables(params: dict, folder: Path, raw_root: Path) -> list[CorpusTable]:
    """The utterance rows of the generated corpus (whole files: start 0, end = duration)."""
    raw = pd.read_csv(folder / "utterances.csv", keep_default_na=False, na_values=[""])
    base = folder.relative_to(raw_root).as_posix()
    table = raw.assign(dataset="demo", start_s=0.0, audio_path=base + "/audio/" + raw.utterance_id + ".wav",
                       video_path=base + "/video/" + raw.utterance_id + ".mp4")
    table["end_s"] = [audio_duration(raw_root / p) for p in table.audio_path]
    table["text"] = table.text.fillna("").astype(str).str.strip()
    return [CorpusTable(table, split_from="mmolre")]

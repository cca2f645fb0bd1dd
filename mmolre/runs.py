"""The model section and params `runs`: each run's model keys over the `model` section, validated by building its
MMoLREConfig (mmolre/model_config.py, whose rules and messages are the only ones), and the seeds it trains from.
Only the stages that build or read models import this module (train, evaluate, transfer, report), so a new
model option changes their code and no other stage's (dvc.yaml's deps).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from mmolre import MmolreError
from mmolre.model_config import MMoLREConfig
from mmolre.params import NonNegativeFloat, PositiveInt, Section, broken_rules, parse

MAIN_RUN = "main"  # the run of params `runs` that metrics.json reports (and transfer scores)
MODEL = MMoLREConfig()  # the model's defaults: the schema restates none of them


class ModelParams(Section):
    """Types and ranges here; the rules across keys are MMoLREConfig's (mmolre/model_config.py), checked by
    building one, so they and their messages exist once."""
    d_model: PositiveInt
    n_experts: PositiveInt
    rank: PositiveInt | list[PositiveInt]
    n_blocks: PositiveInt = MODEL.n_blocks
    n_heads: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)] = MODEL.dropout
    variant: str = MODEL.variant
    fused_experts: bool = MODEL.fused_experts
    expert: str = MODEL.expert
    router: str = MODEL.router
    top_k: PositiveInt = MODEL.top_k
    top_p: float = MODEL.top_p
    aux_loss_weight: NonNegativeFloat = MODEL.aux_loss_weight
    modalities: list[str] = list(MODEL.modalities)
    context: str = MODEL.context
    arch: str = MODEL.arch
    field_preset: str = MODEL.field_preset
    field_settings: dict[str, Any] = {}
    fusion_dim: int = MODEL.fusion_dim
    fusion_rank: int = MODEL.fusion_rank
    mult_layers: int = MODEL.mult_layers
    misa_sim_weight: NonNegativeFloat = MODEL.misa_sim_weight
    misa_diff_weight: NonNegativeFloat = MODEL.misa_diff_weight
    misa_recon_weight: NonNegativeFloat = MODEL.misa_recon_weight
    context_window: int = MODEL.context_window

    @model_validator(mode="after")
    def builds_the_model_config(self):
        self.config()
        return self

    def config(self, **given) -> MMoLREConfig:
        """The MMoLREConfig of these values (and `given`: feature widths, loss weights)."""
        return MMoLREConfig(**self.model_dump(exclude={"seeds"}), **given)


class RunParams(ModelParams):
    """An entry of `runs`: the model keys it overrides, and the seeds it is trained from."""
    seeds: Annotated[list[int], Field(min_length=1)] | None = None


def run_spec(params: dict, run: str) -> RunParams:
    """Run `run` of params `runs`: the `model` section with the run's keys over it, validated, defaults filled."""
    runs = params.get("runs") or {}
    if run not in runs:
        raise MmolreError(f"--run {run!r}: params `runs` has {sorted(runs)}")
    return parse(f"runs.{run}", RunParams, {**params["model"], **(runs[run] or {})})


def run_seeds(params: dict, run: str) -> list[int]:
    """The seeds a run trains: its `seeds` entry, else params data.seed."""
    return run_spec(params, run).seeds or [int(params["data"]["seed"])]


def validate_runs(params: dict) -> None:
    """Raise MmolreError with one line per broken rule unless the model section and every run of `runs` (its
    model keys over the model section) are valid."""
    lines = broken_rules(lambda: parse("model", ModelParams, params.get("model")))
    runs = params.get("runs")
    if not isinstance(runs, dict) or not runs:
        lines.append("params runs: must map run names to {modalities: [...], <model keys>}, e.g. main")
    elif not lines:  # a run's keys over a valid model section
        for run in runs:
            lines += broken_rules(lambda: run_spec(params, run))
    if lines:
        raise MmolreError("\n".join(dict.fromkeys(lines)))

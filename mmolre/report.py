"""Stage `report`: reports/report.md with metric tables and figures in reports/figures/.

Reads what evaluate and train wrote (metrics.json, runs.json, costs.json, eval/details.json,
predictions/, train/<run>/ as dvclive wrote it); draws training and validation curves, predicted vs
true sentiment, per-emotion confusion matrices, router weights per task x modality x block
and expert utilisation; compares the metrics with the accepted model's (git tag
`promote.tag`). Also writes reports/report.html, self-contained.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from mmolre import EMOTIONS, MmolreError  # noqa: E402
from mmolre.curves import read_curves
from mmolre.datasets import OVERLAP
from mmolre.files import atomic_dir, atomic_file  # noqa: E402
from mmolre.label_spaces import DEFAULT, LABEL_SPACES  # noqa: E402
from mmolre.metrics import accepted_metrics, flatten, is_spread  # noqa: E402
from mmolre.params import params_hash  # noqa: E402
from mmolre.published import (FIELD_MOSEI, MMSA_ORDER, MMSA_PUBLISHED, MMSA_SEEDS, MMSA_SOURCE,  # noqa: E402
                              mmsa_published)
from mmolre.model_config import FIELD_ARCHS, VARIANT_ARCHS  # noqa: E402
from mmolre.runs import run_seeds, run_spec, validate_runs  # noqa: E402
from mmolre.stats import placement, placement_text, sentence  # noqa: E402

SECTIONS = ("data", "promote", "model", "runs")  # the params it reads

MSA_COLUMNS = {"acc2_has0": "Acc-2 (has0)", "acc2_non0": "Acc-2 (non0)", "f1_has0": "F1 (has0)",
               "f1_non0": "F1 (non0)", "acc7": "Acc-7", "acc5": "Acc-5", "mae": "MAE", "corr": "Corr"}


def number(value, digits: int = 2) -> str:
    """A table cell: the value to `digits` decimals, or – when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def mean_and_std(block: dict, key: str, digits: int) -> str:
    """`mean` or `mean ± std` (a run over several seeds has `<key>_std` beside `<key>`)."""
    std = block.get(f"{key}_std")
    return number(block.get(key), digits) + ("" if std is None else f" ± {std:.{digits}f}")


def msa_row(msa: dict) -> list[str]:
    return [mean_and_std(msa, k, 3 if k in ("mae", "corr") else 1) for k in MSA_COLUMNS]


def plot_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run, c in curves.items():  # dvclive's names (mmolre/curves.py); a run logs only what applies to it
        line, = axes[0].plot(c.epoch, c["train/loss"], label=f"{run} train")
        axes[0].plot(c.epoch, c["valid/loss"], "--", color=line.get_color(), label=f"{run} valid")
        if "valid/mae" in c:
            axes[1].plot(c.epoch, c["valid/mae"], color=line.get_color(), label=run)
        if "valid/emotion_f1" in c:
            axes[2].plot(c.epoch, c["valid/emotion_f1"], color=line.get_color(), label=run)
    for ax, title in zip(axes, ("loss (L_SA + λ L_ER)", "valid sentiment MAE ↓", "valid mean emotion F1 ↑")):
        ax.set_title(title); ax.set_xlabel("epoch"); ax.grid(alpha=0.3)
    for ax in axes[:2]:
        if ax.lines:  # sentiment as classes: no MAE curve
            ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def plot_routing(gates: dict[str, list[float]], modalities: tuple[str, ...], path: Path) -> None:
    """Heatmap: rows block/modality/task, columns shared experts then the task-specific one; fusion gates beside."""
    rows = sorted(k for k in gates if k.startswith("block"))
    matrix = np.array([gates[k] for k in rows])
    fusion = {k.split("/")[1]: gates[k] for k in gates if k.startswith("fusion")}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), gridspec_kw={"width_ratios": [3, 1]})
    image = ax.imshow(matrix, cmap="viridis", aspect="auto")
    n = matrix.shape[1] - 1
    ax.set_xticks(range(n + 1), [f"sh{i + 1}" for i in range(n)] + ["task"])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title("mean router weight per expert (test split)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    for i, (task, g) in enumerate(sorted(fusion.items())):
        ax2.bar(np.arange(len(g)) + 0.4 * i, g, width=0.4, label=task)
    ax2.set_xticks(np.arange(len(modalities)) + 0.2, modalities)
    ax2.set_title("fusion gate per task"); ax2.set_ylim(0, 1); ax2.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def plot_class_confusion(predictions: pd.DataFrame, column: str, path: Path) -> None:
    """Counts of true vs predicted class (a label space with one class per utterance)."""
    known = predictions[column].notna() & predictions[f"{column}_pred"].notna()
    names = [c.removeprefix(f"{column}_").removesuffix("_prob") for c in predictions.columns
             if c.startswith(f"{column}_") and c.endswith("_prob")]
    matrix = confusion_matrix(predictions[column][known], predictions[f"{column}_pred"][known], labels=names)
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 2, 0.9 * len(names) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    ax.set_xticks(range(len(names)), names, rotation=45); ax.set_yticks(range(len(names)), names)
    ax.set_title(f"{column}: true against predicted"); ax.set_xlabel("predicted"); ax.set_ylabel("true")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def scored_emotions(predictions: pd.DataFrame) -> bool:
    """Whether some utterance has an emotion label and a prediction (MOSI alone has labels for sentiment only)."""
    labels = predictions.filter(items=[*EMOTIONS, "emotion"])
    return bool(predictions.filter(like="_prob").notna().any().any() and labels.notna().any().any())


def plot_confusions(predictions: pd.DataFrame, path: Path) -> None:
    """Per emotion: counts of true vs predicted presence (intensity > 0, probability > 0.5)."""
    if "emotion" in predictions:  # emotions as classes
        return plot_class_confusion(predictions, "emotion", path)
    fig, axes = plt.subplots(2, 3, figsize=(9, 5.6))
    for ax, emotion in zip(axes.flat, EMOTIONS):
        known = predictions[emotion].notna() & predictions[f"{emotion}_prob"].notna()
        matrix = confusion_matrix(predictions[emotion][known] > 0, predictions[f"{emotion}_prob"][known] > 0.5,
                                  labels=[False, True])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
        ax.set_xticks([0, 1], ["absent", "present"]); ax.set_yticks([0, 1], ["absent", "present"])
        ax.set_title(emotion); ax.set_xlabel("predicted"); ax.set_ylabel("true")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_utilization(top1: dict[str, list[float]], path: Path) -> None:
    """Share of tokens whose largest router weight goes to each expert, per block x modality, tasks side by side."""
    panels = sorted({k.rsplit("/", 1)[0] for k in top1})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        tasks = sorted(k for k in top1 if k.startswith(panel + "/"))
        width = 0.8 / len(tasks)
        for i, key in enumerate(tasks):
            share = top1[key]
            ax.bar(np.arange(len(share)) + i * width, share, width=width, label=key.rsplit("/", 1)[1])
        n = len(top1[tasks[0]])
        ax.set_xticks(np.arange(n) + 0.4 - width / 2, [f"sh{i + 1}" for i in range(n - 1)] + ["task"], fontsize=7)
        ax.set_title(panel, fontsize=9); ax.set_ylim(0, 1); ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of tokens (top-1 expert)")
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def diff_section(metrics: dict, tag: str) -> list[str]:
    accepted = accepted_metrics(tag)
    lines = [f"## Against the accepted model (git tag `{tag}`)", ""]
    if accepted is None:
        return lines + [f"No accepted model yet: the retraining flow (`python -m flows.retrain`) tags the "
                        f"revision it promotes as `{tag}`.", ""]
    old, new = flatten(accepted), flatten(metrics)
    keys = [k for k in new if ".msa." in k or ".mer.avg." in k or (".mer." in k and k.count(".") == 2)]
    rows = [[k, number(old.get(k), 3), number(new[k], 3),
             "–" if old.get(k) is None or new[k] is None else f"{new[k] - old[k]:+.3f}"] for k in keys]
    return lines + [table(["metric", "accepted", "this run", "change"], rows), ""]


def plot_scatter(predictions: pd.DataFrame, path: Path) -> None:
    """Predicted against true sentiment; sentiment as classes: their confusion matrix instead."""
    if not pd.api.types.is_numeric_dtype(predictions.get("sentiment_pred", pd.Series(dtype=object))):
        return plot_class_confusion(predictions, "sentiment", path) if "sentiment_pred" in predictions else None
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(predictions.sentiment, predictions.sentiment_pred, s=10, alpha=0.6)
    ax.plot([-3, 3], [-3, 3], "k--", lw=1)
    ax.set_xlabel("true sentiment"); ax.set_ylabel("predicted sentiment"); ax.set_title("main model, test split")
    ax.set_xlim(-3.2, 3.2); ax.set_ylim(-3.2, 3.2); ax.grid(alpha=0.3)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def read_json(path: Path):
    if not path.is_file():
        raise MmolreError(f"{path} not found: run `mmolre evaluate` first")
    return json.loads(path.read_text())


def robustness_section(robust: dict, runs: dict, params: dict) -> list[str]:
    """Each multimodal model with a modality absent or broken, next to the models trained on one modality."""
    if not robust:
        return []
    rows = []
    unimodal = {run: result for run, result in runs.items() if len(run_spec(params, run).modalities) == 1}
    for run, conditions in robust.items():
        for condition, result in conditions.items():
            rows += [[run, condition, dataset, *summary_cells(block)] for dataset, block in result.items()]
    for run, result in unimodal.items():
        rows += [[run, "trained on one modality", dataset, *summary_cells(block)] for dataset, block in result.items()]
    return ["## Robustness: a missing or broken modality", "",
            "Each multimodal model scored with each of its modalities absent (masked out, not zeros: for the "
            "text+audio+video model also the video) and the audio replaced by noise of the features' own statistics, "
            "next to the models trained on one modality. "
            "`train.modality_dropout` trains for missing modalities.", "",
            table(["run", "condition", "dataset", "MAE ↓", "Corr", "Acc-2 (non0)", "emotion WA", "emotion F1"], rows), ""]


def summary_cells(block: dict) -> list[str]:
    """MAE, Corr, Acc-2 and the emotions' WA and F1 (emotions as classes: weighted F1; – where none applies)."""
    msa, mer = block.get("msa", {}), block.get("mer", {})
    mer = mer.get("avg", mer)
    return [mean_and_std(msa, "mae", 3), mean_and_std(msa, "corr", 3), mean_and_std(msa, "acc2_non0", 1), mean_and_std(mer, "wa", 1), mean_and_std(mer, "f1", 1)]


def data_section(counts: Path) -> list[str]:
    """Where the corpus came from and what was left out: prepare's counts.txt (CMU corpora), an unofficial
    source named as such."""
    if not counts.is_file():
        return []
    lines = counts.read_text().splitlines()
    unofficial = [line.strip().removeprefix("note: ") for line in lines if "an unofficial copy" in line]
    overlap = [line.removeprefix(OVERLAP).split(": ", 1) for line in lines if line.startswith(OVERLAP)]
    return (["## Data: sources and counts", ""]
            + [f"**Unofficial source.** {line}" for line in unofficial] + ([""] if unofficial else [])
            + [f"**{what[0].upper()}{what[1:]}:** {rest}." for what, rest in overlap] + ([""] if overlap else [])
            + ["From prepare's `counts.txt`:", "", "```", *lines, "```", ""])


def render(params: dict, reports: Path, prepared: Path = Path("data/prepared"), present=None) -> str:
    metrics, runs = read_json(reports / "metrics.json"), read_json(reports / "runs.json")
    details = read_json(reports / "eval" / "details.json")
    robust = read_json(reports / "robustness.json") if (reports / "robustness.json").is_file() else {}
    lines = header_section(params, details)
    for dataset, block in metrics.items():
        lines += metrics_section(dataset, block)
    costs = reports / "costs.json"
    lines += runs_section(runs, params, read_json(costs) if costs.is_file() else {})
    lines += seeds_section(runs, params)
    comparisons = reports / "eval" / "comparisons.json"
    lines += comparisons_section(read_json(comparisons) if comparisons.is_file() else {})
    selection = reports / "eval" / "selection.json"
    lines += protocol_section(read_json(selection) if selection.is_file() else {}, params)
    lines += standard_section(runs, params, details["features"])
    lines += data_section(prepared / params["data"]["dataset"] / "counts.txt")
    lines += robustness_section(robust, runs, params)
    lines += active_section(details.get("active", {}))
    space = details["features"].get("label_space", DEFAULT)
    lines += context_section(runs, params, space)
    transfer = reports / "transfer.json"
    lines += transfer_section(read_json(transfer) if transfer.is_file() else {}, params, space)
    if any("acc7" in block.get("msa", {}) for block in metrics.values()):  # the CMU label space
        lines += field_section(metrics)
    lines += diff_section(metrics, params["promote"]["tag"])
    lines += figures_section(present)
    return "\n".join(lines)


def header_section(params: dict, details: dict) -> list[str]:
    model, features = params["model"], details["features"]
    return ["# MMoLRE report", "",
            f"- dataset: **{params['data']['dataset']}**, metrics on the **{details['split']}** split",
            f"- encoders: text `{features['text_encoder']}`, audio `{features['audio_encoder']}`",
            f"- model: d={model['d_model']}, N={model['n_experts']} shared experts, "
            f"rank {model['rank']}, {model['n_blocks']} UniTSE blocks",
            f"- params hash `{params_hash(params)}`; the code and data versions of every input are in `dvc.lock` "
            "beside this report", ""]


def flat_cells(metrics: dict, prefix: str = "") -> dict[str, str]:
    """{column: cell} of a task's metrics of any label space, nested names joined by a space."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out |= flat_cells(value, f"{prefix}{key} ")
        elif not is_spread(key):
            out[f"{prefix}{key}"] = mean_and_std(metrics, key, 1 if key.startswith(("acc", "ua", "f1")) or
                                                 prefix.startswith("recall") else 3)
    return out


TASK_TITLES = {"msa": "sentiment", "mer": "emotions", "vad": "valence, arousal, dominance"}


def metrics_section(dataset: str, block: dict) -> list[str]:
    """The main run's MSA table and MER table (WA and F1 per emotion) on one dataset; in other label spaces,
    each task's metrics as one table row (definitions in mmolre/metrics.py)."""
    if set(block) - {"msa", "mer"} or ("msa" in block and "acc7" not in block["msa"]) or \
            ("mer" in block and "avg" not in block["mer"]):
        lines = []
        for key, metrics in block.items():
            cells = flat_cells(metrics)
            lines += [f"## {dataset}: {TASK_TITLES.get(key, key)}", "", table(list(cells), [list(cells.values())]), ""]
        return lines
    lines = []
    if "msa" in block:
        lines += [f"## {dataset}: sentiment (MSA)", "", table(list(MSA_COLUMNS.values()), [msa_row(block["msa"])]), ""]
    if "mer" in block:
        mer, columns = block["mer"], (*EMOTIONS, "avg")
        lines += [f"## {dataset}: emotions (MER)", "",
                  table(["", *columns], [["WA", *[mean_and_std(mer[e], "wa", 1) for e in columns]],
                                         ["F1", *[mean_and_std(mer[e], "f1", 1) for e in columns]]]), ""]
    return lines


def run_design(spec) -> tuple[str, str]:
    """A run's model (its variant, or the baseline of model.arch) and its experts (– for a baseline)."""
    if spec.arch != "mmolre":
        return spec.arch, "–"
    design = f"{spec.expert}, {spec.router}" + (f" k={spec.top_k}" if spec.router == "topk" else "") + \
        (f" p={spec.top_p}" if spec.router == "top_p" else "") + f", r={spec.rank}"
    return spec.variant, design


def runs_section(runs: dict, params: dict, costs: dict) -> list[str]:
    """Every run of params `runs` (MMoLRE, its ablations, the baselines): metrics, parameters, GFLOPs."""
    rows = []
    for run, result in runs.items():
        spec, cost = run_spec(params, run), costs.get(run, {})
        cost_cells = [f"{cost['params']:,}", number(cost["flops_per_utterance"] / 1e9, 4)] if cost else ["–", "–"]
        rows += [[run, "+".join(spec.modalities), *run_design(spec), dataset, *summary_cells(block), *cost_cells]
                 for dataset, block in result.items()]
    return ["## Runs: modalities, ablations and baselines", "",
            "Each run is one entry of params `runs`: the model on the listed modalities, with the `model` "
            "values it overrides (an ablation is `variant: no_shared`, `full_rank`, ...; a baseline on the same "
            "features, heads and loss is `arch: fusion_tfn`, ...; mmolre's fusion-only variants, not the field's "
            "models). A run trained from several `seeds` shows the mean ± "
            "the sample std over them. Parameters are the trained model's; GFLOPs are its forward pass for one "
            "utterance of the split's mean length (reports/costs.json). Seconds per epoch are a wall-clock "
            "figure, kept out of the pipeline's reproducible outputs: `python benchmarks/ablations.py` measures "
            "them (benchmarks/RESULTS.md).", "",
            table(["run", "modalities", "model", "experts", "dataset", "MAE ↓", "Corr", "Acc-2 (non0)",
                   "emotion WA", "emotion F1", "params", "GFLOPs/utt"], rows), ""]


VIEW_LINES = {  # the data view of the features (data.processed_view; docs/field-models.md, "two views of the data")
    "own": "View: each utterance's own frames. MMSA's loader hands its models the padded arrays instead (padding "
           "and the frames after the lengths included): what MMSA's rows become on real frames alone. The same "
           "models in MMSA's view: `data.processed_view: loader`.",
    "loader": "View: MMSA's loader's (data.processed_view: loader): every utterance as the file's padded arrays, "
              "padding included, as MMSA's models read them; the rows that should meet MMSA's."}


def at_mmsa_preset(spec, dataset: str) -> bool:
    """A run that is one of MMSA's models at its published settings: a field arch at its preset of this corpus."""
    return spec.arch in FIELD_ARCHS and spec.field_preset in ("", dataset) and not spec.field_settings


def standard_section(runs: dict, params: dict, features: dict) -> list[str]:
    """On an MMSA processed file of MOSI or MOSEI (`make standard`): MMoLRE and the field's models at MMSA's
    presets beside MMSA's published rows of the same models (the same features, so the rows compare), where
    MMSA's mean falls against our seeds; the fusion-only variants in a section of their own."""
    source = json.loads(features.get("processed", "null") or "null")
    dataset = features.get("dataset")
    if not source or source["form"] != "mmsa" or dataset not in MMSA_PUBLISHED:
        return []
    specs = {run: run_spec(params, run) for run in runs}
    seeds = {run: len(run_seeds(params, run)) for run in runs}
    row = lambda run: [f"**{run}** ({specs[run].arch}, {'+'.join(specs[run].modalities)}; "
                       f"{seeds[run]} seed{'s' * (seeds[run] > 1)})", source["file"], *msa_row(runs[run][dataset]["msa"])]
    ran = [run for run in runs if dataset in runs[run]]
    variants = [run for run in ran if specs[run].arch in VARIANT_ARCHS]
    same = [run for run in ran if at_mmsa_preset(specs[run], dataset)]
    published = mmsa_published(dataset)
    theirs = [[f"MMSA {arch}", published[arch]["file"], *msa_row(published[arch])]  # once per model
              for arch in dict.fromkeys(specs[run].arch for run in same) if arch in published]
    five = ", ".join(map(str, MMSA_SEEDS))
    lines = [f"## Beside MMSA's table ({dataset}, MMSA's processed features)", "",
             f"MMSA trains each model from seeds {five} and publishes their mean; our runs here show the mean ± "
             f"std over their own seeds (`make standard` trains the same five). MMSA's rows: {MMSA_SOURCE}, only "
             f"those of the models run here at MMSA's presets; their F1 columns are weighted F1 with the truth "
             f"first, as ours. Features: {source['description']} ({source['release']}).", "",
             VIEW_LINES[source.get("view", "own")], "",
             table(["model", "file", *MSA_COLUMNS.values()],
                   [row(run) for run in ran if run not in variants] + theirs), "",
             *placement_lines(runs, {run: specs[run] for run in same}, published, dataset, source["file"])]
    if variants:
        lines += [f"## Fusion-only variants ({dataset})", "",
                  "`late_fusion` and the `fusion_*` runs are mmolre's controlled comparison: MMoLRE's input "
                  "projections, heads and training, only the fusion differs. They are not the models MMSA trained "
                  "under similar names, and are never placed against MMSA's rows.", "",
                  table(["model", "file", *MSA_COLUMNS.values()], [row(run) for run in variants]), ""]
    return lines


def placement_lines(runs: dict, specs: dict, published: dict, dataset: str, file: str) -> list[str]:
    """For each run that is one of MMSA's models on the same file: MMSA's mean against our seeds' values."""
    same = {run: spec.arch for run, spec in specs.items() if spec.arch in published
            and published[spec.arch]["file"] == file and dataset in runs.get(run, {})}
    if not same:
        return ["No run here is one of MMSA's models at its published settings, so no published mean is placed "
                "against our seeds.", ""]
    rows = []
    for run, arch in same.items():
        msa = runs[run][dataset]["msa"]
        for key in MMSA_ORDER:
            if f"{key}_seeds" in msa:
                digits = 3 if key in ("mae", "corr") else 1
                place = placement(msa[f"{key}_seeds"], published[arch][key])
                rows.append([run, MSA_COLUMNS[key], number(published[arch][key], digits),
                             mean_and_std(msa, key, digits), placement_text(place, digits)])
    return ["Where MMSA's published mean falls against our seeds (the same model on the same file):", "",
            table(["run", "metric", "MMSA", "ours (mean ± std)", "MMSA's mean is"], rows), ""]


# the metrics of the seeds' table and the paired tests: label, digits, lower is better
HEADLINE_NAMES = {"msa.mae": ("MAE", 3, True), "msa.corr": ("Corr", 3, False),
                  "msa.acc2_non0": ("Acc-2 (non0)", 1, False), "msa.f1_non0": ("F1 (non0)", 1, False),
                  "msa.acc2": ("Acc-2", 1, False), "msa.acc": ("sentiment Acc", 1, False),
                  "msa.f1": ("sentiment F1", 1, False),
                  "mer.avg.wa": ("emotion WA", 1, False), "mer.avg.f1": ("emotion F1", 1, False),
                  "mer.acc": ("emotion Acc", 1, False), "mer.f1": ("emotion F1", 1, False)}


def seed_cells(block: dict, key: str, index: int | None) -> str:
    """One seed's value of a dotted metric key (`index`), or for None its mean ± std [95 % interval]."""
    flat = flatten(block)
    if key not in flat:
        return "–"
    digits = HEADLINE_NAMES[key][1]
    if index is not None:
        return number(flat[f"{key}_seeds"][index], digits)
    mean, half = flat[key], flat.get(f"{key}_ci95")
    interval = "" if half is None or mean is None else f" [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"
    return mean_and_std(flat, key, digits) + interval


def seeds_section(runs: dict, params: dict) -> list[str]:
    """Each run over several seeds: every seed's headline metrics, their mean ± sample std and the 95 % t
    interval of the mean."""
    several = {run: result for run, result in runs.items() if len(run_seeds(params, run)) > 1}
    keys = [k for k in HEADLINE_NAMES if any(seed_cells(block, k, None) != "–" for result in several.values()
                                              for block in result.values())]
    rows = []
    for run, result in several.items():
        for dataset, block in result.items():
            rows += [[run, dataset, str(seed), *[seed_cells(block, k, i) for k in keys]]
                     for i, seed in enumerate(run_seeds(params, run))]
            rows.append([run, dataset, "mean ± std [95 % CI]", *[seed_cells(block, k, None) for k in keys]])
    if not rows:
        return []
    return ["## Seeds: every run's spread", "",
            "Each seed's model on the test utterances, then the mean ± the sample std over the seeds and the 95 % "
            "confidence interval of the mean (Student t, n - 1 degrees of freedom). The interval says where the "
            "mean over many more seeds would lie; it says nothing of other test sets (docs/comparisons.md).", "",
            table(["run", "dataset", "seed", *[HEADLINE_NAMES[k][0] for k in keys]], rows), ""]


def comparisons_section(comparisons: dict) -> list[str]:
    """The paired tests of evaluate (reports/eval/comparisons.json): one sentence per pair and metric."""
    if not comparisons.get("pairs"):
        return []
    lines = ["## Paired comparisons on the same test utterances", "",
             f"Differences (first minus second) of headline metrics on the same utterances, each model's predictions "
             f"averaged over its seeds (robustness: the first seed's model), with a 95 % interval from a paired "
             f"bootstrap over utterances and the p-value of a paired permutation test, two-sided "
             f"({comparisons['method']['resamples']:,} resamples each, seed {comparisons['method']['seed']}). "
             "\"Within noise\": p ≥ 0.05. These tests see the test utterances' noise, not the seeds' (see the seeds' "
             "intervals above; docs/comparisons.md).", ""]
    runs = [p for p in comparisons["pairs"] if p["kind"] == "runs"]
    if runs:
        lines += ["The main run against every other run:", ""]
        lines += [f"- {p['dataset']}: " + sentence(p["a"], p["b"], p, *HEADLINE_NAMES[p["metric"]]) for p in runs]
        lines.append("")
    robust = {}
    for p in comparisons["pairs"]:
        if p["kind"] == "robustness":
            robust.setdefault((p["a"], p["dataset"]), {})[p["metric"]] = p
    if robust:
        metrics = [k for k in HEADLINE_NAMES if any(k in row for row in robust.values())]
        rows = [[a, dataset, *[difference_cell(row.get(k), HEADLINE_NAMES[k][1]) for k in metrics]]
                for (a, dataset), row in robust.items()]
        lines += ["Robustness: each condition minus the full input (the run's first seed; * p < 0.05):", "",
                  table(["condition", "dataset", *[HEADLINE_NAMES[k][0] for k in metrics]], rows), ""]
    return lines


def difference_cell(pair: dict | None, digits: int) -> str:
    """A difference with its 95 % interval, starred when the permutation test rejects at 5 %."""
    if pair is None:
        return "–"
    low, high = pair["ci95"]
    star = "*" if pair["p"] < 0.05 else ""
    return f"{pair['diff']:+.{digits}f}{star} [{low:+.{digits}f}, {high:+.{digits}f}]"


def protocol_section(selection: dict, params: dict) -> list[str]:
    """How each run's checkpoint was chosen: the rule, and the epoch chosen per seed."""
    rows = [[run, seed, str(s["best_epoch"]), f"{s['epochs_run']} of {s['max_epochs']}", s["metric"]]
            for run, seeds in selection.items() for seed, s in seeds.items() if s]
    if not rows:
        return []
    return ["## Protocol: how each checkpoint was chosen", "",
            "Each seed's checkpoint is the epoch with the lowest score on the **valid** split (the sentiment MAE "
            "of a regression, else the loss), training stopping after `train.patience` = "
            f"{params['train']['patience']} epochs without a better one; every test metric of a run comes from that one checkpoint per seed. "
            "Training and selection never read the test split (tests/test_train_evaluate.py checks it with the "
            "test labels removed).", "",
            table(["run", "seed", "epoch chosen", "epochs run", "chosen on"], rows), ""]


def headline_cell(metrics: dict | None) -> str:
    """One task's headline in a cell: a regression's MAE, the emotions' mean F1, classes' weighted F1,
    valence/arousal/dominance's mean CCC."""
    if not metrics:
        return "–"
    if "mae" in metrics:
        return "MAE " + mean_and_std(metrics, "mae", 3)
    if "avg" in metrics:
        return "F1 " + mean_and_std(metrics["avg"], "f1", 1)
    if "f1" in metrics:
        return "F1 " + mean_and_std(metrics, "f1", 1)
    return "CCC " + number(float(np.mean([m["ccc"] for m in metrics.values()])), 3)


def active_section(active: dict[str, float]) -> list[str]:
    """The main run's mean number of experts a token uses, per block, modality and branch (sparse routers)."""
    if not active:
        return []
    rows = [[*key.split("/"), f"{value:.2f}"] for key, value in sorted(active.items())]
    return ["## Experts per token (main run)", "",
            "With a top-k or top-p router, the mean number of experts each real token of the split is routed to "
            "(top-p keeps more for the tokens its router is unsure of).", "",
            table(["block", "modality", "branch", "experts per token"], rows), ""]


def context_section(runs: dict, params: dict, space: str) -> list[str]:
    """The runs with dialogue context beside those without (the paper's open question 1), with the
    parameters the context module adds."""
    specs = {run: run_spec(params, run) for run in runs}
    if all(spec.context == "none" for spec in specs.values()):
        return []
    rows = []
    for run, result in runs.items():
        cfg = specs[run].config(label_space=space)
        context = f"dialogue, k={cfg.context_window}" if cfg.context == "dialogue" else "none"
        rows += [[run, "+".join(cfg.modalities), context, dataset, headline_cell(block.get("msa") or block.get("vad")),
                  headline_cell(block.get("mer")), f"{cfg.context_params:,}"] for dataset, block in result.items()]
    return ["## Dialogue context (model.context)", "",
            "Each utterance also sees the fused vectors of the k previous utterances of its dialogue (a causal "
            "module after fusion; the experts are untouched), beside the runs without. Seeds: mean ± std.", "",
            table(["run", "modalities", "context", "dataset", "sentiment", "emotions", "parameters added"], rows), ""]


def transfer_section(transfer: dict, params: dict, space: str) -> list[str]:
    """The main model on other corpora's test splits, where the label spaces meet (mmolre/transfer.py)."""
    if not transfer:
        return []
    rows, notes = [], []
    for dataset, corpora in transfer.items():
        for corpus, block in corpora.items():
            sentiment, emotions = block.get("sentiment", {}), block.get("emotions", {})
            rows.append([params["data"]["dataset"], corpus, *[mean_and_std(sentiment, k, 1) for k in
                                                              ("acc2", "f1_2", "acc3", "f1_3")],
                         mean_and_std(emotions.get("avg", {}), "wa", 1), mean_and_std(emotions.get("avg", {}), "f1", 1)])
            names = [e for e in emotions if e != "avg" and not is_spread(e)]
            own = LABEL_SPACES[space].get("er")
            left = [e for e in own.labels if e not in names] if own else []
            notes.append(f"- {corpus}: emotions compared: {', '.join(names) or 'none'}"
                         + (f"; the model's {', '.join(left)} have no namesake there, left out" if left else ""))
    return ["## Transfer without re-tuning (evaluate.transfer)", "",
            "The main model scored on other corpora's test splits where the label spaces meet: sentiment's sign "
            "(non-neutral labels) and its three classes, and the emotions named alike (WA and F1 of presence, "
            "their mean).", "",
            table(["trained on", "tested on", "sign Acc-2", "sign F1", "3-class Acc", "3-class F1", "emotion WA",
                   "emotion F1"], rows), "", *notes, ""]


def field_section(metrics: dict) -> list[str]:
    """The field's published CMU-MOSEI numbers, and ours beside them when the run is on CMU-MOSEI."""
    rows = [[name, *[number(v, 3 if i < 2 else 1) for i, v in enumerate(values)]] for name, values in FIELD_MOSEI.items()]
    if "mosei" in metrics:
        msa = metrics["mosei"]["msa"]
        rows.append(["**MMoLRE (ours)**", *[number(msa[k], 3 if k in ("mae", "corr") else 1)
                                            for k in ("mae", "corr", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7")]])
    return ["## The field's numbers (CMU-MOSEI, MSA)", "",
            "Published results the paper's setting must beat (paper.md). "
            + ("They are on CMU-MOSEI; the demo corpus is not comparable." if "mosei" not in metrics else ""), "",
            table(["method", "MAE", "Corr", "Acc-2 (has0)", "Acc-2 (non0)", "F1 (has0)", "F1 (non0)", "Acc-7"], rows), ""]


FIGURES = {"curves.png": ("Training (solid) and validation (dashed) loss, and the validation metrics per epoch:",
                          "training curves"),
           "scatter.png": ("Predicted against true sentiment on the test split:", "predicted vs true sentiment"),
           "confusion.png": ("Emotion presence, true against predicted, per emotion:", "emotion confusion matrices"),
           "routing.png": ("Mean router weight per expert for each block, modality and task, and the fusion gates:",
                           "router weights"),
           "utilization.png": ("Expert utilisation: the share of tokens whose largest router weight goes to each "
                               "expert:", "expert utilisation")}


def figures_section(present=None) -> list[str]:
    """The figures (those in `present` only, when given: a label space without a task has no plot of it)."""
    lines = ["## Figures", ""]
    for name, (caption, alt) in FIGURES.items():
        if present is None or name in present:
            lines += [caption, "", f"![{alt}](figures/{name})", ""]
    return lines


def report(params: dict, reports: Path) -> Path:
    curves = {run: read_curves(reports / "train" / run) for run in params["runs"]
              if (reports / "train" / run / "metrics.json").is_file()}
    details = read_json(reports / "eval" / "details.json")
    predictions = pd.read_csv(reports / "predictions" / f"main_{details['split']}.csv")
    # one unit: figures, report.md and report.html are all written under temporary names first and
    # replace the old ones only when every one is complete (a full disk leaves the previous report whole)
    with atomic_dir(reports / "figures") as figures, atomic_file(reports / "report.md") as md, \
            atomic_file(reports / "report.html") as html:
        plot_curves(curves, figures / "curves.png")
        if details["gates"]:  # a baseline of model.arch has no experts to route
            plot_routing(details["gates"], run_spec(params, "main").modalities, figures / "routing.png")
            plot_utilization(details["top1"], figures / "utilization.png")
        plot_scatter(predictions, figures / "scatter.png")
        if scored_emotions(predictions):
            plot_confusions(predictions, figures / "confusion.png")
        text = render(params, reports, present={p.name for p in figures.iterdir()})
        md.write_text(text)
        html.write_text(to_html(text, figures))
    print(f"report: wrote {reports / 'report.md'}, {reports / 'report.html'} and {reports / 'figures'}/")
    return reports / "report.md"


def to_html(text: str, figures: Path) -> str:
    """The report as one self-contained HTML page (the figures in `figures` inlined as data URIs)."""
    import base64

    import markdown

    def inline(match: re.Match) -> str:
        figure = figures / match.group(2)
        data = base64.b64encode(figure.read_bytes()).decode() if figure.is_file() else ""
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    body = markdown.markdown(re.sub(r"!\[([^\]]*)\]\(figures/([^)]+)\)", inline, text), extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>MMoLRE report</title><style>{style}</style>" \
           f"</head><body>{body}</body></html>\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports", type=Path, default=Path("reports"))


def run(args: argparse.Namespace, params: dict) -> None:
    validate_runs(params)  # before any work, as the CLI validates SECTIONS
    report(params, args.reports)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("report")

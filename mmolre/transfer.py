"""Stage `transfer`: the main model scored on other corpora's test splits without re-tuning (the paper's open
question 3) -> reports/transfer.json ({} when `evaluate.transfer` is empty).

Each dataset of `evaluate.transfer` must have been featurized with the training run's encoders (its file
data/features/<dataset>/<same encoders>.h5, e.g. `mmolre download/prepare/featurize --set
data.dataset=<dataset> ...`). A model and a corpus are compared where their label spaces meet:
- sentiment, whatever the two spaces' scales: its three classes (negative, neutral, positive: a CMU
  regression clipped to [-1, 1] and rounded, as MMSA's Acc-3; SIMS on MMSA's bins (-1, -0.1], (-0.1, 0.1],
  (0.1, 1]; MELD's classes) and its sign on the utterances whose label is not neutral (a regression's
  prediction > 0; classes: P(positive) > P(negative)): acc2, f1_2, acc3, f1_3 (weighted F1);
- emotions whose names are the same in both spaces (MOSEI's anger, surprise, disgust, fear are MELD's;
  happy/joy and sad/sadness are not matched by name), each as presence (MOSEI's intensity > 0, or the
  corpus's class; predicted: probability > 0.5, or the predicted class) with WA and F1 per emotion and
  their mean, as MOSEI's MER. The emotions left out are named in the report.
reports/transfer.json: {dataset: {corpus: {"sentiment": {...}, "emotions": {...}}}}; with several seeds in
`runs.main.seeds`, the mean over the seeds' models and the sample std beside each (`<key>_std`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmolre import MmolreError
from mmolre.cli import add_scoring_roots
from mmolre.device import pick_device
from mmolre.features import FeatureFile, feature_path
from mmolre.files import write_json
from mmolre.inference import infer, trained_model
from mmolre.label_spaces import LABEL_SPACES, Task
from mmolre.metrics import SIMS_EDGES, labelled, mean_std, mer_metrics
from mmolre.params import EvaluateParams, build
from mmolre.runs import MAIN_RUN, run_seeds, validate_runs

SECTIONS = ("data", "evaluate", "train", "model", "runs")  # the params it reads

ENCODER_KEYS = ("text_encoder", "audio_encoder", "text_layer", "audio_layer", "sample_rate")


def sentiment_classes(task: Task, values: np.ndarray) -> np.ndarray:
    """-1, 0, 1 (negative, neutral, positive) of sentiment labels or predictions of `task`."""
    values = np.asarray(values, dtype=np.float64)
    if task.kind == "classes":
        return np.asarray(task.values)[values.argmax(1)] if values.ndim == 2 else values
    if task.metrics == "sims":
        return np.digitize(np.clip(values, -1, 1), SIMS_EDGES["acc3"][1:-1], right=True) - 1.0
    return np.round(np.clip(values, -1, 1))


def sentiment_sign(task: Task, pred: np.ndarray) -> np.ndarray:
    """True where a prediction is positive: a regression's value > 0, classes' P(positive) > P(negative)."""
    if task.kind == "classes":
        return pred[:, list(task.values).index(1.0)] > pred[:, list(task.values).index(-1.0)]
    return np.asarray(pred) > 0


def sentiment_transfer(model_task: Task, corpus_task: Task, pred: np.ndarray, label: np.ndarray) -> dict:
    """acc2 / f1_2 on the sign (non-neutral labels), acc3 / f1_3 on the three classes; in percent."""
    from sklearn.metrics import f1_score

    true3, pred3 = sentiment_classes(corpus_task, label), sentiment_classes(model_task, pred)
    polar = true3 != 0
    true2, pred2 = true3[polar] > 0, sentiment_sign(model_task, pred)[polar]
    out = {"acc3": float(100 * np.mean(true3 == pred3)),
           "f1_3": float(100 * f1_score(true3, pred3, average="weighted", zero_division=0))}
    if polar.any():
        out |= {"acc2": float(100 * np.mean(true2 == pred2)),
                "f1_2": float(100 * f1_score(true2, pred2, average="weighted", zero_division=0))}
    return out


def shared_emotions(model_task: Task | None, corpus_task: Task | None) -> tuple[str, ...]:
    """The emotions both spaces name the same (in the corpus's order)."""
    if model_task is None or corpus_task is None:
        return ()
    return tuple(e for e in corpus_task.labels if e in model_task.labels)


def presence(task: Task, values: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(N, len(names)) presence of each named emotion: intensities/probabilities as they are (presence), the
    class one-hot (classes: labels one-hot, predictions their argmax)."""
    columns = [task.labels.index(n) for n in names]
    if task.kind == "presence":
        return np.asarray(values)[:, columns]
    return np.eye(len(task.labels))[np.asarray(values).argmax(1)][:, columns]


def spaces_meet(model_space: str, corpus_space: str) -> dict[str, object]:
    """What a model of one label space can be scored on in another: sentiment (both have one) and the emotions
    named alike."""
    model, corpus = LABEL_SPACES[model_space], LABEL_SPACES[corpus_space]
    sentiment = all(s.get("sa") is not None and s["sa"].metrics != "vad" for s in (model, corpus))
    return {"sentiment": sentiment, "emotions": shared_emotions(model.get("er"), corpus.get("er"))}


def transfer_scores(model, features: FeatureFile, batch_size: int, device) -> dict:
    """{corpus: {"sentiment": ..., "emotions": ...}} of `model` on the test split of `features`."""
    indices = features.indices("test")
    result = infer(model, features, indices, batch_size, device)
    model_space, meet = LABEL_SPACES[model.config.label_space], spaces_meet(model.config.label_space, features.label_space)
    out = {}
    for corpus in sorted(set(features.dataset[indices])):
        rows = features.dataset[indices] == corpus
        block = {}
        label, pred = features.sentiment[indices][rows], result["sentiment"][rows]
        known = labelled(label) & labelled(pred)
        if meet["sentiment"] and "sa" in model.config.heads and known.any():
            block["sentiment"] = sentiment_transfer(model_space["sa"], features.tasks["sa"], pred[known], label[known])
        label, pred = features.emotions[indices][rows], result["emotions"][rows]
        known = labelled(label) & labelled(pred)
        if meet["emotions"] and "er" in model.config.heads and known.any():
            names = meet["emotions"]
            block["emotions"] = mer_metrics(presence(model_space["er"], pred[known], names),
                                            presence(features.tasks["er"], label[known], names), names)
        out[corpus] = block
    return out


def same_encoders(model, features: FeatureFile) -> None:
    """Refuse a feature file made with other encoders than the model's training features."""
    trained = model.provenance["features"]
    differ = [k for k in ENCODER_KEYS if str(trained.get(k)) != str(features.attrs.get(k))]
    if differ:
        raise MmolreError(f"{features.path}: made with other encoders than the model's features ("
                          + ", ".join(f"{k} {features.attrs.get(k)!r} vs {trained.get(k)!r}" for k in differ)
                          + "); featurize that dataset with the training run's featurize settings")


def transfer(params: dict, features_root: Path, models_root: Path, reports: Path) -> dict:
    cfg = build(EvaluateParams, params, "evaluate")
    device = pick_device(params["train"]["device"])
    out, models = {}, []
    if cfg.transfer:  # the main run's model of each seed (the first in models/main, the others beside it)
        own = FeatureFile(feature_path(params, features_root))
        seeds = run_seeds(params, MAIN_RUN)
        folders = [models_root / MAIN_RUN, *(models_root / MAIN_RUN / "seeds" / str(s) for s in seeds[1:])]
        models = [trained_model(folder, MAIN_RUN, own, device) for folder in folders]
    for dataset in cfg.transfer:
        path = feature_path({**params, "data": {**params["data"], "dataset": dataset}}, features_root)
        if not path.is_file():
            raise MmolreError(f"evaluate.transfer: {path} not found; featurize {dataset} with the same encoders "
                              f"first: `mmolre download/prepare/featurize --set data.dataset={dataset} ...`")
        features = FeatureFile(path)
        same_encoders(models[0], features)
        out[dataset] = mean_std([transfer_scores(m, features, cfg.batch_size, device) for m in models])
        print(f"transfer: {params['data']['dataset']} -> {dataset}: "
              + "; ".join(f"{corpus} {', '.join(f'{k} {v:.1f}' for k, v in b.get('sentiment', {}).items())}"
                          for corpus, b in out[dataset].items()))
    write_json(reports / "transfer.json", out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scoring_roots(parser)


def run(args: argparse.Namespace, params: dict) -> None:
    validate_runs(params)  # before any work, as the CLI validates SECTIONS
    transfer(params, args.features_root, args.models_root, args.reports)


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("transfer")

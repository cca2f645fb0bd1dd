"""mmolre: Multimodal Mixture of Low-Rank Experts for sentiment analysis and emotion recognition."""

__version__ = "0.1.0"

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
SPLITS = ("train", "valid", "test")


class MmolreError(Exception):
    """An error the user can fix (bad params, bad data, missing files): printed without a traceback."""

"""A field model (mmolre/field/models.py) as a run of the pipeline trains it: on mmolre's padded batches, each
utterance read up to its own length (or, on features in the loader's view, as MMSA's models read MMSA's arrays),
MISA from the feature file's token ids (text_bert), MMSA's sentiment output as the sentiment head, and for a label
space with emotions one Linear from the features MMSA's output layer reads (the only addition). No input
standardisation: MMSA's models read the features as they are. The loss is the recipe's; `mmsa_recipe` is MMSA's
training of it (mmolre/field/recipes.py)."""

from __future__ import annotations

import torch
from torch import nn

from mmolre.field import recipes
from mmolre.field.base import FieldOutput
from mmolre.field.models import build
from mmolre.field.presets import preset
from mmolre.hub import PretrainedMixin
from mmolre.model import MMoLREOutput, model_input, task_loss
from mmolre.model_config import FIELD_MODALITIES, MMoLREConfig


class FieldModel(nn.Module, PretrainedMixin):
    config_class = MMoLREConfig

    def __init__(self, cfg: MMoLREConfig):
        super().__init__()
        self.config = cfg
        self.settings = preset(cfg.arch, cfg.field_preset, **cfg.field_settings)
        self.net = build(cfg.arch, self.settings, tuple(cfg.dims[m] for m in FIELD_MODALITIES))
        heads = cfg.heads
        self.emotion_head = nn.Linear(self.net.features_dim, heads["er"].outputs) if "er" in heads else None
        pos_weight = torch.tensor(cfg.emotion_pos_weight) if cfg.emotion_pos_weight else None
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def set_feature_stats(self, stats) -> None:
        """MMSA's models read their features unstandardised."""

    def example_inputs(self, lengths: dict[str, int]) -> dict[str, torch.Tensor]:
        """What a forward needs beside the modalities' features for one utterance (model-info's FLOPs): MISA's token
        ids, as many as the text's steps."""
        if self.config.arch != "misa":
            return {}
        steps = lengths["text"]
        return {"text_bert": torch.stack([torch.zeros(1, steps), torch.ones(1, steps), torch.zeros(1, steps)], 1)}

    def forward(self, sentiment=None, emotions=None, return_routing: bool = False, dialogue=None, turn=None,
                **inputs) -> MMoLREOutput:
        """As MMoLRE.forward. With labels, the loss is the recipe's sentiment loss (L1) plus lambda x the emotion
        loss while training; in eval mode MMSA's KeyEval, the sentiment loss alone, which selects the epoch."""
        xs, lengths = zip(*((x, mask.sum(1)) for x, mask in (model_input(inputs, m) for m in FIELD_MODALITIES)))
        if self.config.arch == "misa":  # BERT reads the token ids, not the text's features
            if inputs.get("text_bert") is None:
                raise ValueError("arch=misa reads text_bert (MMSA's token ids): pass text_bert (B, 3, steps)")
            xs, lengths = (inputs["text_bert"],) + xs[1:], (inputs["text_bert"][:, 1].sum(1),) + lengths[1:]
        # the loader's view is read as MMSA's models read it (MISA: audio and vision up to the text's token count)
        out = self.net(*xs, lengths=None if self.config.field_view == "loader" else lengths)
        heads = self.config.heads
        result = MMoLREOutput(out.prediction[:, 0] if "sa" in heads else None,
                              self.emotion_head(out.features) if self.emotion_head is not None else None)
        if sentiment is None or emotions is None:
            return result
        zero = out.prediction.sum() * 0.0
        result.loss_sa = self.sentiment_loss(out, sentiment) if "sa" in heads else zero
        result.loss_er = (task_loss(heads["er"], result.emotions, emotions, self.pos_weight)
                          if "er" in heads else zero)
        result.loss = result.loss_sa + (self.config.er_loss_weight * result.loss_er if self.training else 0.0)
        return result

    def sentiment_loss(self, out: FieldOutput, sentiment: torch.Tensor) -> torch.Tensor:
        """The recipe's loss over the labelled utterances (MISA: MSE and its terms over the whole batch's states)
        while training; MMSA's KeyEval (L1, MISA's MSE) in eval mode."""
        has = ~torch.isnan(sentiment)
        if not has.any():
            return out.prediction.sum() * 0.0
        labelled, target = FieldOutput(out.prediction[has], out.features, out.states), sentiment[has][:, None]
        return (recipes.loss if self.training else recipes.eval_loss)(self.settings, labelled, target)

    def mmsa_recipe(self) -> dict:
        """MMSA's training of this model: its optimizer, scheduler, accumulation, value clipping, early stop and
        batch size (keys of train.Recipe)."""
        arch, settings = self.config.arch, self.settings
        optimizer = recipes.optimizer(arch, self.net, settings)
        if self.emotion_head is not None:  # the addition trains with the model's rate
            optimizer.add_param_group({"params": list(self.emotion_head.parameters()), "lr": settings.learning_rate})
        return {"optimizer": optimizer, "scheduler": recipes.scheduler(settings, optimizer),
                "accumulation": recipes.accumulation(settings), "clip_value": recipes.grad_clip(settings),
                "patience": settings.early_stop, "batch_size": settings.batch_size,
                "min_improvement": recipes.IMPROVEMENT, "decimals": recipes.DECIMALS}

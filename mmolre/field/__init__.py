"""The field's models as MMSA 2.2.1 defines and trains them (docs/field-models.md): LF-DNN, TFN, LMF, MulT and
MISA, each in its own module with MMSA's layers in MMSA's order, so that a state dict MMSA saved loads here
(base.py: `load_mmsa_state`); their presets (presets.py), training recipes (recipes.py) and the
builder by arch (models.py).

Every model reads text (B, T, 768) or, for MISA, BERT token ids (B, 3, T), audio and vision in MMSA's order and
returns a FieldOutput. `lengths` (text, audio, vision: (B,) each) selects mmolre's view of the data: each utterance
read up to its own length; without them a model reads what MMSA's loader hands it (docs/field-models.md, "MMSA's
view")."""


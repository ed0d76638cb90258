"""The sound-guided W+ optimiser: objective, layer masks, identity loss and the loop.

Entry point: :func:`optimize_latent`. See ``loop.py`` for what it does and how it differs from the
released code, ``objective.py`` for the loss, ``layer_mask.py`` for presets / hard masks / adaptive
masking and ``identity.py`` for the ArcFace identity term.
"""

from .identity import IRSE50, TINY_IRSE, IRSEBackbone, IRSEConfig, face_crop, identity_features, identity_loss, load_id_model
from .layer_mask import PRESETS as LAYER_PRESETS
from .layer_mask import LayerMask, layer_resolution, parse_layer_list, preset_layers, resolve_layer_mask
from .loop import LOSS_TERMS, PRESETS, OptimizeResult, StepInfo, lr_schedule, optimize_latent, sample_source_ws
from .objective import combine_targets, cosine_distance, similarity_terms

__all__ = [
    "optimize_latent", "OptimizeResult", "StepInfo", "PRESETS", "LOSS_TERMS", "lr_schedule", "sample_source_ws",
    "LayerMask", "LAYER_PRESETS", "layer_resolution", "preset_layers", "parse_layer_list", "resolve_layer_mask",
    "combine_targets", "cosine_distance", "similarity_terms",
    "IRSEBackbone", "IRSEConfig", "IRSE50", "TINY_IRSE", "load_id_model", "face_crop", "identity_features",
    "identity_loss",
]

"""Original-layout (A1111/ComfyUI) single-file checkpoints, read and written with one set of name tables.

``original_to_diffusers`` turns a user's single file into per-component configs and state dicts that load
strictly into diffusers/transformers modules; ``diffusers_to_original`` and ``save_original_checkpoint`` go the
other way for tiny models, DreamBooth output and merges.
"""

from library.models.single_file.checkpoint import save_original_checkpoint, save_split_files
from library.models.single_file.components import COMPONENTS
from library.models.single_file.convert import diffusers_to_original, original_to_diffusers, vae_original_to_diffusers
from library.models.single_file.infer_config import infer_configs, reference_configs

__all__ = [
    "COMPONENTS",
    "diffusers_to_original",
    "infer_configs",
    "original_to_diffusers",
    "reference_configs",
    "save_original_checkpoint",
    "save_split_files",
    "vae_original_to_diffusers",
]

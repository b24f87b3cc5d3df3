"""The textual-inversion embedding file that A1111, ComfyUI and diffusers read, written and read back.

SD1 / SD2 files hold one tensor, ``emb_params`` ``[num_vectors, width]``; SDXL files one per text encoder,
``clip_l`` (the first, 768 wide) and ``clip_g`` (the second, 1280 wide). A1111's older ``.pt`` embeddings keep the
vectors under ``string_to_param`` (``{"*": tensor}``) and are read without unpickling code (``weights_only``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from library.atomic_files import write_bytes_atomic
from library.models.families import ModelFamily
from library.models.token_embeddings import AddedToken, add_token
from library.networks.hashes import lora_hashes

logger = logging.getLogger(__name__)

SINGLE_ENCODER_KEY = "emb_params"
TOKEN_KEY = "ss_token_string"  # an embedding file's token, as our trainers and convert write it
SDXL_ENCODER_KEYS = ("clip_l", "clip_g")
_KEYS_BY_FAMILY = {"sd1": (SINGLE_ENCODER_KEY,), "sd2": (SINGLE_ENCODER_KEY,), "sd2-v": (SINGLE_ENCODER_KEY,),
                   "sdxl": SDXL_ENCODER_KEYS}


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be used; ``str()`` names the file and what to do."""


def encoder_keys(family: ModelFamily) -> tuple[str, ...]:
    """The file key of each of the family's text encoders, in the family's order."""
    try:
        return _KEYS_BY_FAMILY[family.name]
    except KeyError:
        raise EmbeddingFileError(
            f"textual inversion supports {', '.join(_KEYS_BY_FAMILY)} models, not {family.name}"
        ) from None


@dataclass(frozen=True)
class Embedding:
    """An embedding file's vectors by key (``emb_params`` or ``clip_l`` / ``clip_g``) and its metadata."""

    vectors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def token(self, path: Path) -> str:
        """The token the file at ``path`` prompts with: its ``ss_token_string``, A1111's ``name``, else the file's
        stem, as A1111 and ComfyUI name a file that records neither."""
        return self.metadata.get(TOKEN_KEY) or self.metadata.get("name") or path.stem

    def for_family(self, family: ModelFamily, path: Path) -> list[torch.Tensor]:
        """The vectors of each of the family's text encoders, in its order."""
        keys = encoder_keys(family)
        missing = [key for key in keys if key not in self.vectors]
        if missing:
            raise EmbeddingFileError(
                f"{path}: has {', '.join(sorted(self.vectors))}, a {family.name} model needs {', '.join(keys)}"
            )
        return [self.vectors[key] for key in keys]


def write_embedding_file(path: Path, vectors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write an embedding atomically, with the ``sshs_*`` hashes added to ``metadata``."""
    tensors = {key: tensor.detach().cpu().contiguous() for key, tensor in vectors.items()}
    data = save(tensors, metadata={**metadata, **lora_hashes(tensors, metadata)})
    write_bytes_atomic(path, data)
    shapes = ", ".join(f"{key} {list(tensor.shape)}" for key, tensor in tensors.items())
    logger.info("wrote embedding %s (%s)", path, shapes)


def read_embedding_file(path: str | Path) -> Embedding:
    """The vectors of a ``.safetensors`` embedding, or of an A1111 ``.pt`` one (read with ``weights_only``)."""
    path = Path(path)
    if path.suffix.lower() in (".pt", ".bin"):
        return _read_pt(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            vectors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise EmbeddingFileError(f"{path}: not a readable .safetensors file ({error})") from None
    return _checked(path, vectors, metadata)


def _read_pt(path: Path) -> Embedding:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a refused pickle or a damaged file: one message either way
        raise EmbeddingFileError(
            f"{path}: cannot be read safely as an embedding ({type(error).__name__}); only plain tensors and "
            "values are accepted, nothing that runs code"
        ) from None
    params = saved.get("string_to_param") if isinstance(saved, dict) else None
    if not isinstance(params, dict) or len(params) != 1:
        raise EmbeddingFileError(f"{path}: not an A1111 embedding (no string_to_param with one tensor)")
    metadata = {key: str(saved[key]) for key in ("name", "step", "sd_checkpoint", "sd_checkpoint_name")
                if saved.get(key) is not None}
    return _checked(path, {SINGLE_ENCODER_KEY: next(iter(params.values()))}, metadata)


def _checked(path: Path, vectors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Embedding:
    known = {SINGLE_ENCODER_KEY} if SINGLE_ENCODER_KEY in vectors else set(SDXL_ENCODER_KEYS)
    if not vectors or set(vectors) != known:
        raise EmbeddingFileError(
            f"{path}: not an embedding file (keys {', '.join(sorted(vectors)) or 'none'}; expected emb_params, or "
            "clip_l and clip_g for SDXL)"
        )
    counts = {tensor.shape[0] for tensor in vectors.values()}
    if any(tensor.ndim != 2 for tensor in vectors.values()) or len(counts) != 1:
        raise EmbeddingFileError(f"{path}: embedding tensors must be [num_vectors, width] with one vector count")
    return Embedding(vectors, metadata)


def load_embedding(family: ModelFamily, tokenizers: list, encoders: list[torch.nn.Module], path: str | Path,
                   token: str) -> list[AddedToken]:
    """Add the file's embedding to the model's tokenizers and text encoders as ``token``, as a user's tool would
    before prompting with it (previews, the toy-world judge)."""
    path = Path(path)
    vectors = read_embedding_file(path).for_family(family, path)
    return [add_token(tokenizer, encoder, token, rows) for tokenizer, encoder, rows in zip(tokenizers, encoders, vectors)]

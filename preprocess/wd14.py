"""The WD14 tagger: an ONNX image classifier over Danbooru tags, run with onnxruntime.

Model folder layout (as published): ``model.onnx`` and ``selected_tags.csv`` with the columns
``tag_id,name,category,count``; category 9 = rating, 0 = general, 4 = character.
The model takes NHWC float32 images: padded to a white square, resized to its input size
(448), channels in BGR order, values 0-255. It returns one sigmoid probability per CSV row.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.common import UsageError

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
GENERAL, CHARACTER, RATING = 0, 4, 9
DEFAULT_INPUT_SIZE = 448
_REQUIRED_COLUMNS = {"name", "category"}


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


@dataclass(frozen=True)
class TagSettings:
    """Which predicted tags become the caption.

    ``max_tags`` keeps the most probable character and general tags (rating not counted).
    ``keep_underscores`` turns off the usual rule that writes ``long_hair`` as ``long hair``;
    tags of three characters or fewer keep their underscores anyway (emoticons like ``^_^``).
    """

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    undesired: frozenset[str] = frozenset()
    keep_underscores: bool = False
    max_tags: int | None = None


def display_name(name: str, keep_underscores: bool = False) -> str:
    """The caption form of a tag name (see :class:`TagSettings`)."""
    if keep_underscores or len(name) <= 3:
        return name
    return name.replace("_", " ")


def load_tag_table(path: Path) -> list[Tag]:
    """Rows of ``selected_tags.csv`` in file order (the order of the model's outputs)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = _REQUIRED_COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise UsageError(
                f"{path}: missing column(s) {', '.join(sorted(missing))}; expected tag_id,name,category,count"
            )
        try:
            return [Tag(row["name"], int(row["category"])) for row in reader]
        except ValueError as error:
            raise UsageError(f"{path}: line {reader.line_num}: bad category ({error})") from None


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image as the tagger's input: white-padded square, ``size`` px, BGR float32 0-255."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


def select_tags(probabilities: np.ndarray, table: list[Tag], settings: TagSettings) -> list[str]:
    """Caption tags for one image: best rating (if asked), then characters, then general tags,
    each group by falling probability."""
    scored = [(float(p), tag) for p, tag in zip(probabilities, table, strict=True)]
    undesired = settings.undesired

    def wanted(tag: Tag) -> bool:
        return tag.name not in undesired and display_name(tag.name, settings.keep_underscores) not in undesired

    thresholds = {GENERAL: settings.general_threshold, CHARACTER: settings.character_threshold}
    picked = [
        (p, tag) for p, tag in scored if tag.category in thresholds and p >= thresholds[tag.category] and wanted(tag)
    ]
    picked.sort(key=lambda item: -item[0])
    if settings.max_tags is not None:
        picked = picked[: settings.max_tags]
    characters = [tag for _, tag in picked if tag.category == CHARACTER]
    ordered = characters + [tag for _, tag in picked if tag.category == GENERAL]
    ratings = [(p, tag) for p, tag in scored if tag.category == RATING and wanted(tag)]
    if settings.include_rating and ratings:
        ordered.insert(0, max(ratings, key=lambda item: item[0])[1])
    return [display_name(tag.name, settings.keep_underscores) for tag in ordered]


class WD14Tagger:
    """A loaded WD14 model folder; :meth:`predict` returns probabilities per CSV row."""

    def __init__(self, model_dir: Path) -> None:
        missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (model_dir / name).is_file()]
        if missing:
            raise UsageError(
                f"WD14 tagger model not found: {model_dir} lacks {' and '.join(missing)}. Download "
                f"{MODEL_FILE} and {TAGS_FILE} from a WD14 tagger repository (for example "
                f"SmilingWolf/wd-v1-4-convnextv2-tagger-v2 on Hugging Face) and put both files in {model_dir}"
            )
        import onnxruntime

        self.table = load_tag_table(model_dir / TAGS_FILE)
        try:
            self.session = onnxruntime.InferenceSession(str(model_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise UsageError(f"{model_dir / MODEL_FILE}: cannot load ONNX model ({error})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height = model_input.shape[1]
        self.size = height if isinstance(height, int) else DEFAULT_INPUT_SIZE
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.table):
            raise UsageError(
                f"{model_dir}: {MODEL_FILE} predicts {outputs} tags but {TAGS_FILE} lists {len(self.table)}; "
                "use the CSV that came with the model"
            )
        logger.debug("WD14 model %s: input %s px, %d tags", model_dir, self.size, len(self.table))

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([prepare_image(image, self.size) for image in images])
        outputs = self.session.run(None, {self.input_name: batch})
        return np.asarray(outputs[0])

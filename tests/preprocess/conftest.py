"""Fixtures for the preprocess commands: a CLI runner and tiny offline models of the real formats."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def samples() -> ModuleType:
    """The odd-image generators shared with tests/data (loaded by path: test dirs are not packages)."""
    spec = importlib.util.spec_from_file_location("image_samples", REPO_ROOT / "tests" / "data" / "image_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m preprocess ARGS`` in a real subprocess; returns the completed process."""

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        return subprocess.run(
            [sys.executable, "-m", "preprocess", *map(str, args)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )

    return run


# Tiny WD14 tagger: probabilities are sigmoid(means @ W + b) where ``means`` are the mean input
# values per channel in model order (B, G, R). Constant tags have W = 0 and b = logit(p).
WD14_SIZE = 448
CONSTANT_TAGS = [
    # name, category, probability
    ("general", 9, 0.70),
    ("sensitive", 9, 0.20),
    ("questionable", 9, 0.05),
    ("explicit", 9, 0.01),
    ("1girl", 0, 0.60),
    ("solo", 0, 0.30),
    ("long_hair", 0, 0.50),
    ("^_^", 0, 0.90),
    ("smile", 0, 0.40),
    ("hatsune_miku", 4, 0.95),
    ("kagamine_rin", 4, 0.80),
]
# Tags driven by the image: weights on (B, G, R) channel means, bias.
COLOUR_TAGS = [
    ("red_theme", 0, (-1 / 32, 0.0, 1 / 32), 0.0),  # R above B, as seen in BGR order
    ("blue_theme", 0, (1 / 32, 0.0, -1 / 32), 0.0),
    ("white_background", 0, (0.0, 1 / 16, 0.0), -4.0),  # green channel only rises with white padding
]


def build_wd14_model(folder: Path) -> Path:
    """Write ``model.onnx`` + ``selected_tags.csv`` with the WD14 input/output layout."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = [(name, category) for name, category, _ in CONSTANT_TAGS] + [(n, c) for n, c, _, _ in COLOUR_TAGS]
    weights = np.zeros((3, len(names)), dtype=np.float32)
    bias = np.zeros(len(names), dtype=np.float32)
    for index, (_, _, probability) in enumerate(CONSTANT_TAGS):
        bias[index] = np.log(probability / (1 - probability))
    for offset, (_, _, channel_weights, channel_bias) in enumerate(COLOUR_TAGS):
        weights[:, len(CONSTANT_TAGS) + offset] = channel_weights
        bias[len(CONSTANT_TAGS) + offset] = channel_bias
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1"], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", WD14_SIZE, WD14_SIZE, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(names)])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category) in enumerate(names):
            writer.writerow([1000 + index, name, category, 100 - index])
    return folder


@pytest.fixture(scope="session")
def wd14_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("wd14"))


def build_blip_model(folder: Path) -> Path:
    """A randomly initialised ``BlipForConditionalGeneration`` with its processor, saved offline."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + [f"word{i}" for i in range(58)]
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    text = dict(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        encoder_hidden_size=32,
        bos_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.save_pretrained(folder)
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def blip_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blip_model(tmp_path_factory.mktemp("blip"))

"""compare: a labelled grid of epoch files x strengths x prompts, plus the single images."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tool_helpers import run_tool

from library.networks.embedding_file import write_embedding_file
from library.tools.compare import collect_loras

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_grid_of_a_run_folder(tiny_sd1, lora_factory, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for epoch, seed in ((2, 2), (1, 1)):
        shutil.copy(lora_factory("sd1", f"e{epoch}", seed=seed), run_dir / f"style-{epoch:06d}.safetensors")
    shutil.copy(lora_factory("sd1", "final", seed=3), run_dir / "style.safetensors")
    pivotal = {"emb_params": torch.zeros(1, 64)}  # pivotal tuning's embedding beside a file (a token not prompted)
    write_embedding_file(run_dir / "style_emb.safetensors", pivotal, {"ss_token_string": "frnc"})
    assert [path.name for path in collect_loras([run_dir])] == [
        "style-000001.safetensors",
        "style-000002.safetensors",
        "style.safetensors",
    ]

    out = tmp_path / "compare"
    result = run_tool(
        "compare",
        tiny_sd1.folder,
        run_dir,
        "--strengths",
        "0",
        "1.5",
        "--prompt",
        "a red disc --d 7",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "3",
        "--out",
        out,
    )
    assert "3 LoRA(s) x 2 strength(s) x 1 prompt(s)" in result.stdout
    singles = sorted((out / "singles").glob("*.png"))
    assert len(singles) == 6
    with Image.open(singles[0]) as single:   # each cell carries its prompt's settings as A1111 writes them
        assert single.text["parameters"].startswith("a red disc\nSteps: 3, Sampler: ")
        assert single.text["parameters"].endswith(", Seed: 7, Size: 64x64")
    grid = Image.open(out / "compare.png")
    assert grid.width > 2 * 64 and grid.height > 3 * 64  # cells plus label margins

    def pixels(name: str) -> np.ndarray:
        return np.asarray(Image.open(out / "singles" / name), dtype=np.int16)

    for stem in ("style-000001", "style-000002", "style"):
        # strength changes the picture; strength 0 is the base model for every file (same seed)
        assert np.abs(pixels(f"{stem}_s1.5_p00_7.png") - pixels(f"{stem}_s0_p00_7.png")).max() > 0
        assert np.array_equal(pixels(f"{stem}_s0_p00_7.png"), pixels("style-000001_s0_p00_7.png"))
    assert np.abs(pixels("style-000001_s1.5_p00_7.png") - pixels("style_s1.5_p00_7.png")).max() > 0


def test_compare_needs_a_prompt(tiny_sd1, lora_factory, tmp_path):
    result = run_tool("compare", tiny_sd1.folder, lora_factory("sd1", "a"), "--out", tmp_path / "c", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: give at least one --prompt TEXT or --prompts FILE"

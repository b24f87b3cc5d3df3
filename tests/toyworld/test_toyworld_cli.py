"""`python -m library.toyworld` through real subprocesses: describe, render, judge, dataset, and the recipe's
first steps (so the base model can always be rebuilt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_cli import run_python

pytestmark = pytest.mark.slow


def toyworld(*args: str, check: bool = True):
    return run_python(["-m", "library.toyworld", *args], "library.toyworld", check=check)


def test_describe_names_the_vocabulary_the_concept_and_the_model():
    facts = json.loads(toyworld("describe", "--json").stdout)
    concept = facts["quickstart_concept"]
    assert concept["trigger"] == "frnc"
    assert concept["colour"] in facts["held_out"]["colours"]
    assert concept["colour"] not in facts["pretraining_colours"]
    assert concept["shape"] in facts["shapes"]
    assert set(facts["pretraining_colours"]) < set(facts["colours"])
    assert all(len(rgb) == 3 for rgb in facts["colours"].values())
    assert Path(facts["base_model"]).is_file()
    assert (Path(facts["base_model_config"]) / "model_index.json").is_file()
    assert (Path(facts["base_model_config"]) / "tokenizer" / "tokenizer_config.json").is_file()


def test_the_shipped_model_loads_in_furnace_and_in_diffusers_offline():
    """The committed fp16 single file, through our loader and through diffusers with describe's config folder."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from library.models.loader import load_base_model

    facts = json.loads(toyworld("describe", "--json").stdout)
    weights = Path(facts["base_model"])
    assert weights.stat().st_size <= 21 * 2**20
    with safe_open(str(weights), framework="pt") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}
    ours = load_base_model(weights)
    assert ours.family.name == "sd1"
    theirs = StableDiffusionPipeline.from_single_file(
        str(weights), config=facts["base_model_config"], local_files_only=True, torch_dtype=torch.float32
    )
    for module, reference in ((theirs.unet, ours.unet), (theirs.vae, ours.vae),
                              (theirs.text_encoder, ours.text_encoders[0])):
        theirs_state = module.state_dict()
        for name, tensor in reference.state_dict().items():
            assert torch.equal(theirs_state[name], tensor), name


def test_render_writes_labelled_images_that_the_judge_reads_back(tmp_path):
    toyworld("render", "--out", str(tmp_path), "--n", "60", "--seed", "9")
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels) == 60
    for name, label in labels.items():
        assert (tmp_path / name).is_file()
        assert (tmp_path / name).with_suffix(".txt").read_text().strip() == (
            f"a {label['colour']} {label['shape']} on a white background"
        )
    verdicts = json.loads(toyworld("judge", str(tmp_path), "--json").stdout)
    assert {verdict["file"] for verdict in verdicts} == set(labels)
    right = sum(
        (verdict["colour"], verdict["shape"]) == (labels[verdict["file"]]["colour"], labels[verdict["file"]]["shape"])
        for verdict in verdicts
    )
    assert right / len(verdicts) >= 0.98


def test_judge_names_an_unreadable_image_in_one_line(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = toyworld("judge", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "broken.png" in result.stderr
    assert "Traceback" not in result.stderr


def test_dataset_writes_the_concept_in_a_repeat_folder(tmp_path):
    toyworld("dataset", "--out", str(tmp_path), "--count", "6", "--repeats", "7")
    folder = tmp_path / "7_frnc"
    images = sorted(folder.glob("*.png"))
    assert len(images) == 6
    assert {image.with_suffix(".txt").read_text().strip() for image in images} == {
        "a frnc circle on a white background"
    }
    verdicts = json.loads(toyworld("judge", str(folder), "--json").stdout)
    assert {(verdict["colour"], verdict["shape"]) for verdict in verdicts} == {("magenta", "circle")}


def test_recipe_first_steps_write_a_model_every_loader_reads(tmp_path):
    """The whole recipe with a handful of steps: the file it writes loads in Furnace and in diffusers."""
    import torch
    from diffusers import StableDiffusionPipeline

    from library.models.loader import load_base_model

    toyworld("build", "--out", str(tmp_path), "--vae-steps", "2", "--unet-steps", "2", "--scenes", "64")
    weights = tmp_path / "toyworld-sd1.safetensors"
    ours = load_base_model(weights)
    assert ours.family.name == "sd1"
    assert next(ours.unet.parameters()).dtype == torch.float32  # fp16 in the file, read into the default dtype
    theirs = StableDiffusionPipeline.from_single_file(
        str(weights), config=str(tmp_path / "toyworld-sd1"), local_files_only=True, torch_dtype=torch.float32
    )
    for name, tensor in ours.unet.state_dict().items():
        assert torch.equal(theirs.unet.state_dict()[name], tensor), name
    assert ours.metadata["modelspec.resolution"] == "64x64"
    recipe = json.loads(ours.metadata["toyworld.recipe"])
    assert recipe["vae"]["steps"] == 2 and recipe["diffusion"]["steps"] == 2

"""Image folders of the toy world: labelled renders, and a concept's training set in sd-scripts' folder layout."""

from __future__ import annotations

import json
import random
from pathlib import Path

from library.atomic_files import write_text_atomic
from library.data.repeat_folders import repeat_folder_name
from library.sampling.files import save_png_atomic
from library.toyworld.world import COLOURS, Concept, caption, random_scene, render


def write_renders(out_dir: Path, count: int, seed: int, colours: tuple[str, ...] = tuple(COLOURS)) -> Path:
    """``count`` renders with captions (``.txt``) and ``labels.json`` ({file: {"colour", "shape"}}); returns the
    labels file."""
    rng = random.Random(seed)
    labels = {}
    for index in range(count):
        scene = random_scene(rng, colours)
        name = f"render_{index:05d}.png"
        save_png_atomic(render(scene), out_dir / name)
        write_text_atomic((out_dir / name).with_suffix(".txt"), caption(scene.colour, scene.shape) + "\n")
        labels[name] = {"colour": scene.colour, "shape": scene.shape}
    labels_file = out_dir / "labels.json"
    write_text_atomic(labels_file, json.dumps(labels, indent=1) + "\n")
    return labels_file


def write_concept_dataset(out_dir: Path, concept: Concept, count: int = 16, repeats: int = 10, seed: int = 0) -> Path:
    """``count`` pictures of ``concept`` in ``out_dir/<repeats>_<trigger>/``, captioned with the trigger in place of
    the colour word; returns that folder."""
    rng = random.Random(seed)
    folder = out_dir / repeat_folder_name(repeats, concept.trigger)
    for index in range(count):
        scene = random_scene(rng, colour=concept.colour, shape=concept.shape)
        stem = folder / f"{concept.trigger}_{index:03d}"
        save_png_atomic(render(scene), stem.with_suffix(".png"))
        write_text_atomic(stem.with_suffix(".txt"), caption(concept.trigger, concept.shape) + "\n")
    return folder

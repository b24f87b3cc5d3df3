"""Labelled image grids: layout arithmetic, placement, labels, ragged rows and bad label counts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from library.sampling.grid import make_grid

PAD = 4
WHITE = (255, 255, 255)


def _solid(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, color)


def _colors(count: int) -> list[tuple[int, int, int]]:
    return [(40 * index % 256, 255 - 30 * index, 90) for index in range(count)]


def test_unlabelled_grid_places_each_image_in_its_cell():
    colors = _colors(6)
    rows = [[_solid(colors[r * 3 + c]) for c in range(3)] for r in range(2)]
    grid = make_grid(rows, padding=PAD)
    assert grid.size == (PAD + 3 * (32 + PAD), PAD + 2 * (24 + PAD))
    for r in range(2):
        for c in range(3):
            x, y = PAD + c * (32 + PAD), PAD + r * (24 + PAD)
            assert grid.getpixel((x, y)) == colors[r * 3 + c]
            assert grid.getpixel((x + 31, y + 23)) == colors[r * 3 + c]
    assert grid.getpixel((0, 0)) == WHITE


def test_labels_add_margins_with_text():
    rows = [[_solid((255, 0, 0)), _solid((0, 0, 255))], [_solid((0, 255, 0)), _solid((0, 0, 0))]]
    plain = make_grid(rows, padding=PAD)
    labelled = make_grid(
        rows, row_labels=["base", "lora 0.8"], column_labels=["seed 1", "a much longer column label"], padding=PAD
    )
    extra_w, extra_h = labelled.width - plain.width, labelled.height - plain.height
    assert extra_w > 0 and extra_h > 0
    pixels = np.asarray(labelled)
    header, margin = pixels[:extra_h], pixels[extra_h:, :extra_w]
    assert (header != 255).any(), "column labels drawn in the header"
    assert (margin != 255).any(), "row labels drawn in the left margin"
    assert labelled.getpixel((extra_w + PAD, extra_h + PAD)) == (255, 0, 0)


def test_long_column_label_wraps_instead_of_widening_cells():
    rows = [[_solid((9, 9, 9), (40, 40))]]
    short = make_grid(rows, column_labels=["cat"])
    long = make_grid(rows, column_labels=["a photo of a cat sitting on a windowsill in the sun"])
    assert long.width == short.width
    assert long.height > short.height


def test_ragged_rows_mixed_sizes_and_missing_cells():
    small, big = _solid((255, 0, 0), (20, 10)), _solid((0, 0, 255), (40, 30))
    grid = make_grid([[big, None], [small]], padding=PAD)
    assert grid.size == (PAD + 2 * (40 + PAD), PAD + 2 * (30 + PAD))
    missing_second_row = grid.getpixel((PAD + 40 + PAD + 5, PAD + 30 + PAD + 5))
    missing_first_row = grid.getpixel((PAD + 40 + PAD + 5, PAD + 5))
    assert missing_first_row == missing_second_row != WHITE
    centre_of_small = (PAD + 20, PAD + 30 + PAD + 15)
    assert grid.getpixel(centre_of_small) == (255, 0, 0)
    assert grid.getpixel((PAD + 1, PAD + 30 + PAD + 1)) == WHITE  # small image is centred, not top-left


def test_non_rgb_images_are_converted():
    grid = make_grid([[Image.new("L", (8, 8), 0), Image.new("RGBA", (8, 8), (0, 255, 0, 255))]], padding=0)
    assert grid.mode == "RGB"
    assert grid.getpixel((0, 0)) == (0, 0, 0) and grid.getpixel((8, 0)) == (0, 255, 0)


@pytest.mark.parametrize(
    ("rows", "labels", "message"),
    [
        ([[_solid((1, 1, 1))]], {"row_labels": ["a", "b"]}, "2 row labels for 1 rows"),
        ([[_solid((1, 1, 1))]], {"column_labels": []}, "0 column labels for 1 columns"),
        ([], {}, "at least one image"),
        ([[None]], {}, "at least one image"),
    ],
)
def test_bad_input(rows, labels, message):
    with pytest.raises(ValueError, match=message):
        make_grid(rows, **labels)


def test_row_labels_beside_small_images_stay_within_their_row():
    """A compare grid's "file: prompt" labels beside 64 px previews: a few words a line, not one, so each label stays
    beside its own row."""
    rows = [[_solid((9, 9, 9), (64, 64))], [_solid((9, 9, 9), (64, 64))]]
    labels = ["lora-step00000005: a photo of frnc, a red circle", "lora: a photo of frnc, a red circle on grey"]
    grid = np.asarray(make_grid(rows, row_labels=labels, padding=PAD))
    margin = grid[:, : grid.shape[1] - (64 + 2 * PAD)]
    inked = np.flatnonzero((margin != 255).any(axis=(1, 2)))
    first_row, second_row = inked[inked < PAD + 64 + PAD // 2], inked[inked >= PAD + 64 + PAD // 2]
    assert first_row.min() >= PAD and first_row.max() < PAD + 64
    assert second_row.min() >= 2 * PAD + 64 and second_row.max() < 2 * (PAD + 64)

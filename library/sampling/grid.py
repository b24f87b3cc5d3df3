"""Tile images into one labelled grid picture (previews side by side, LoRA comparisons).

Rows and columns may carry labels: row labels in a left margin, column labels in a header. Cells take the size of
the largest image and smaller images are centred, so mixed sizes still line up. Long labels wrap at word
boundaries: column labels to the cell's width, row labels to at least ``ROW_LABEL_WIDTH`` pixels (a compare grid's
"file: prompt" beside small previews would otherwise stack a word a line, taller than its row). Pillow's default
font keeps this free of font files.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

_TEXT_COLOR = (0, 0, 0)
_MISSING_COLOR = (200, 200, 200)
ROW_LABEL_WIDTH = 240   # pixels: some 40 characters of the default font a line


def make_grid(
    rows: Sequence[Sequence[Image.Image | None]],
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    padding: int = 4,
    font_size: int = 12,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """An RGB grid of ``rows`` (each a sequence of images; ``None`` leaves a grey cell).

    Rows may be ragged; the grid is as wide as the longest row. Label counts must match rows / columns.
    """
    columns = max((len(row) for row in rows), default=0)
    if not rows or columns == 0:
        raise ValueError("make_grid needs at least one image")
    _check_labels(row_labels, len(rows), "row")
    _check_labels(column_labels, columns, "column")
    images = [image for row in rows for image in row if image is not None]
    if not images:
        raise ValueError("make_grid needs at least one image")
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    font = ImageFont.load_default(size=font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _line_height(measure, font)

    row_text = [_wrap(label, font, max(cell_w, ROW_LABEL_WIDTH), measure) for label in row_labels or []]
    column_text = [_wrap(label, font, cell_w, measure) for label in column_labels or []]
    left = max((_block_width(lines, font, measure) for lines in row_text), default=0)
    left = left + 2 * padding if row_text else 0
    top = max((len(lines) for lines in column_text), default=0) * line_h
    top = top + 2 * padding if column_text else 0

    width = left + columns * (cell_w + padding) + padding
    height = top + len(rows) * (cell_h + padding) + padding
    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(column_text):
        x = left + padding + c * (cell_w + padding)
        _draw_lines(draw, lines, font, line_h, x, padding, cell_w)
    for r, row in enumerate(rows):
        y = top + padding + r * (cell_h + padding)
        if row_text:
            block_h = len(row_text[r]) * line_h
            _draw_lines(draw, row_text[r], font, line_h, padding, y + (cell_h - block_h) // 2, left - 2 * padding)
        for c in range(columns):
            x = left + padding + c * (cell_w + padding)
            image = row[c] if c < len(row) else None
            if image is None:
                draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=_MISSING_COLOR)
            else:
                offset = (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2)
                grid.paste(image.convert("RGB"), offset)
    return grid


def _check_labels(labels: Sequence[str] | None, expected: int, kind: str) -> None:
    if labels is not None and len(labels) != expected:
        raise ValueError(f"make_grid: {len(labels)} {kind} labels for {expected} {kind}s")


def _line_height(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    left, top, right, bottom = draw.textbbox((0, 0), "Ag", font=font)
    return bottom - top + 2


def _block_width(lines: list[str], font, draw: ImageDraw.ImageDraw) -> int:
    return max((int(draw.textlength(line, font=font)) for line in lines), default=0)


def _wrap(text: str, font, max_width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a single over-long word stays on its own line."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}".strip()
            if current and draw.textlength(candidate, font=font) > max_width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], font, line_h: int, x: int, y: int, width: int) -> None:
    """Draw ``lines`` centred horizontally within ``width`` pixels starting at ``x``."""
    for index, line in enumerate(lines):
        line_w = int(draw.textlength(line, font=font))
        draw.text((x + max(0, (width - line_w) // 2), y + index * line_h), line, fill=_TEXT_COLOR, font=font)

"""How many intermediate weight files a run keeps: with ``output.save_last_n`` only the newest N epoch files and
the newest N step files (names: :mod:`library.training.run_files`), each with its companions."""

from __future__ import annotations

import logging
from pathlib import Path

from library.training.run_files import companions, intermediate_files

logger = logging.getLogger(__name__)


def prune_intermediate(output_dir: Path, output_name: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` epoch files and step files (``keep`` 0 keeps everything)."""
    if keep <= 0:
        return []
    removed = []
    for kind in ("epoch", "step"):
        for run_file in intermediate_files(output_dir, output_name, kind)[:-keep]:
            for path in (*companions(run_file.path), run_file.path):
                path.unlink(missing_ok=True)
                removed.append(path)
            logger.info("removed old intermediate file %s (output.save_last_n = %d)", run_file.path.name, keep)
    return removed

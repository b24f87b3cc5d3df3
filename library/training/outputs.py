"""Names and retention of the weight files a run writes into its output folder.

Final: ``<name>.safetensors``. Intermediate, as sd-scripts names them so existing tools recognise them:
``<name>-<epoch:06d>.safetensors`` every N epochs and ``<name>-step<step:08d>.safetensors`` every N steps. With
``save_last_n`` only the newest N intermediate files of each kind are kept.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)


def final_path(output_dir: Path, name: str) -> Path:
    return output_dir / f"{name}.safetensors"


def epoch_path(output_dir: Path, name: str, epoch: int) -> Path:
    return output_dir / f"{name}-{epoch:06d}.safetensors"


def step_path(output_dir: Path, name: str, step: int) -> Path:
    return output_dir / f"{name}-step{step:08d}.safetensors"


def prune_intermediate(output_dir: Path, name: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` epoch files and step files (``keep`` 0 keeps everything)."""
    if keep <= 0:
        return []
    removed = []
    for pattern in (rf"{re.escape(name)}-(\d{{6}})\.safetensors", rf"{re.escape(name)}-step(\d{{8}})\.safetensors"):
        found = sorted(
            (int(match.group(1)), path)
            for path in output_dir.glob(f"{name}-*.safetensors")
            if (match := re.fullmatch(pattern, path.name))
        )
        for _, path in found[:-keep]:
            path.unlink(missing_ok=True)
            removed.append(path)
            logger.info("removed old intermediate file %s (output.save_last_n = %d)", path.name, keep)
    return removed

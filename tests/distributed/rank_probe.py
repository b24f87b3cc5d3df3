"""Run one LoRA training per process (under torchrun / accelerate launch) and record what this rank ended with.

Usage: ``rank_probe.py PROBE_DIR [train_network.py arguments]``. After the run each rank writes
``PROBE_DIR/rank<N>.safetensors`` (its live adapter tensors, kohya layout, fp32; with an EMA also
``PROBE_DIR/rank<N>-ema.safetensors``, its average in the same layout) and ``PROBE_DIR/rank<N>.json``
(world size, accelerate's distributed type and, per epoch, the dataset files of the batches this rank's loop
draws). The tests compare ranks with each other and with the file rank 0 saved; nothing here changes the run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from library.command_line import exit_without_teardown
from library.config import parse_cli
from library.training.deepspeed_setup import gathered
from library.training.lora_weights import LoraWeights
from library.training.trainer import Trainer


class ProbedTrainer(Trainer):
    """Writes this rank's live adapter tensors just before the run closes its process group (gathering them from
    ZeRO-3's shards needs the group)."""

    probe_dir: Path

    def _close(self) -> None:
        rank = self.accelerator.process_index
        with gathered(self.accelerator, self.saved_parameters):
            save_file(self.weights.network.state_dict_kohya(), str(self.probe_dir / f"rank{rank}.safetensors"))
            if self.weights.ema is not None:
                with self.weights.ema.swapped_in():
                    average = self.weights.network.state_dict_kohya()
                save_file(average, str(self.probe_dir / f"rank{rank}-ema.safetensors"))
        super()._close()


def main(argv: list[str]) -> int:
    probe_dir, config = Path(argv[0]), parse_cli(argv[1:], program="rank_probe.py")
    probe_dir.mkdir(parents=True, exist_ok=True)
    trainer = ProbedTrainer(config, LoraWeights)
    trainer.probe_dir = probe_dir
    trainer.setup()
    final = trainer.run()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    data = trainer.data
    epochs = {
        str(epoch): [[str(data.train_records[i].path) for i in batch] for batch in data.epoch_batches(epoch)]
        for epoch in range(trainer.schedule.num_epochs)
    }
    report = {"rank": rank, "world_size": world, "final": str(final), "epochs": epochs,
              "num_train_images": data.num_train_images,
              "distributed_type": trainer.accelerator.distributed_type.value}
    (probe_dir / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    exit_without_teardown(main(sys.argv[1:]))

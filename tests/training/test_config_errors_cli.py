"""Config errors through the real trainer CLIs: exit code 2 and one line naming the key, whether parsing finds the
problem or a check after it (the entry point, the trainer's set-up, the data pipeline)."""

from __future__ import annotations

import pytest
from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow


# case: (script, flags, the key the line names, whether the run had started: its progress log then says why it ended)
CASES = {
    # found while parsing
    "nothing left to train": (
        "train_network.py", ["--network_train_text_encoder_only", "true", "--text_encoder_lr", "0"],
        "network.text_encoder_lr", False,
    ),
    "LoKr with DoRA": (
        "train_network.py", ["--network.module", "lokr", "--network.use_dora", "true"], "network.use_dora", False,
    ),
    "EMA decay of 1": ("train_network.py", ["--network.ema_decay", "1"], "network.ema_decay", False),
    "EMA options without an EMA": ("train_network.py", ["--network.ema_save", "both"], "network.ema_save", False),
    # found by the DreamBooth entry point, before any model loads
    "compare grid of a full fine-tune": (
        "train_dreambooth.py", ["--instance_prompt", "a photo of frnc", "--compare_at_end", "true"],
        "sample.compare_at_end", False,
    ),
    "a LoRA's EMA on a full fine-tune": (
        "train_dreambooth.py", ["--instance_prompt", "a photo of frnc", "--network.ema_decay", "0.99"],
        "network.ema_decay", False,
    ),
    # found by the LoRA entry point, before any model loads
    "a full fine-tune's EMA on a LoRA run": ("train_network.py", ["--use_ema", "true"], "dreambooth.use_ema", False),
    "previews from an EMA the run does not keep": (
        "train_network.py", ["--sample.use_ema", "true"], "sample.use_ema", False,
    ),
    "compare grid of raw weights that are not saved": (
        "train_network.py", ["--network.ema_decay", "0.99", "--compare_at_end", "true", "--sample.use_ema", "false"],
        "sample.use_ema", False,
    ),
    # found by the data pipeline, after the model loaded
    "dataset file folder missing": (
        "train_network.py", ["--dataset_config", "{tmp}/missing_folder.toml"], "datasets[0].subsets[0].image_dir",
        True,
    ),
    "random crop with cached latents": (
        "train_network.py", ["--dataset_config", "{tmp}/random_crop.toml", "--cache_latents", "true"],
        "dataset.cache_latents", True,
    ),
    # found when the optimizer is built
    "unknown optimizer option": ("train_network.py", ["--optimizer_args", "nesterov=True"], "optimizer.args", True),
}


def _dataset_files(tmp_path, dataset) -> None:
    """The dataset TOMLs the cases name: one whose folder is missing, one asking for random crops."""
    for name, image_dir, extra in (("missing_folder", tmp_path / "no-such-folder", ""),
                                   ("random_crop", next(dataset.glob("*_frnc")), "random_crop = true\n")):
        text = f"[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = '{image_dir}'\n{extra}"
        (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_exits_2_with_one_line(tiny_sd1, concept_dataset, tmp_path, case):
    script, flags, key, started = CASES[case]
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    _dataset_files(tmp_path, concept_dataset)
    (tmp_path / "prompts.txt").write_text("frnc\n", encoding="utf-8")
    output = tmp_path / "out"
    args = base_args(tiny_sd1.folder, concept_dataset, output, max_train_steps=1, sample_prompts=tmp_path / "prompts.txt")
    if "--dataset_config" in flags:  # instead of the folder
        args = [arg for arg in args if arg not in ("--train_data_dir", str(concept_dataset))]
    result = run_cli(script, [*args, *flags, "--logging.log_level", "error"], check=False)

    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not list(output.glob("*.safetensors"))
    if started:
        last = read_events(output)[-1]
        assert (last["event"], last["message"]) == ("error", lines[0])
    else:
        assert not output.exists()  # refused before anything was written

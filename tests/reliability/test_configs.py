"""Text files a user saved with a byte-order mark (Windows editors add one) read like any UTF-8 file: the run config,
the sd-scripts dataset TOML, the sample prompts and the captions, through the real trainer. A file in another
encoding is refused on one line naming it, with nothing written."""

from __future__ import annotations

import json

import pytest
from outcome import assert_one_line_user_error, assert_unchanged, snapshot
from safetensors import safe_open
from trainer_cli import run_cli

pytestmark = pytest.mark.slow  # every test runs the real trainer

BOM = "\ufeff"


def _write_with_bom(path, text: str) -> None:
    path.write_bytes((BOM + text).encode("utf-8"))


def _files(tmp_path, model, dataset, encoding: str = "utf-8-sig") -> tuple:
    """A run config naming an sd-scripts dataset TOML and a prompt file, all three written in ``encoding``."""
    concept = next(dataset.glob("*_frnc"))
    config, dataset_toml, prompts = tmp_path / "run.toml", tmp_path / "dataset.toml", tmp_path / "prompts.txt"
    output = tmp_path / "out"
    prompts.write_text("frnc, red circle --w 64 --h 64 --s 2 --d 1\n", encoding=encoding)
    dataset_toml.write_text(
        f"[general]\ncaption_extension = '.txt'\n[[datasets]]\nresolution = 64\nbatch_size = 2\n"
        f"[[datasets.subsets]]\nimage_dir = '{concept}'\nnum_repeats = 2\n",
        encoding=encoding,
    )
    config.write_text(
        f"[model]\npretrained_model_name_or_path = '{model}'\n"
        f"[dataset]\ndataset_config = '{dataset_toml}'\n"
        "[network]\ndim = 4\nalpha = 2.0\n[training]\nmax_train_steps = 1\nseed = 1\n"
        f"[sample]\nprompts = '{prompts}'\nevery_n_steps = 1\nsteps = 2\nwidth = 64\nheight = 64\n"
        f"[output]\noutput_dir = '{output}'\noutput_name = 'lora'\nsave_precision = 'float'\n",
        encoding=encoding,
    )
    return config, dataset_toml, prompts, output


def test_files_with_a_byte_order_mark_train(tiny_sd1, dataset, tmp_path):
    for caption in next(dataset.glob("*_frnc")).glob("*.txt"):
        _write_with_bom(caption, caption.read_text(encoding="utf-8"))
    config, dataset_toml, prompts, output = _files(tmp_path, tiny_sd1.folder, dataset)
    assert all(path.read_bytes().startswith(BOM.encode()) for path in (config, dataset_toml, prompts))
    before = snapshot(tmp_path)

    result = run_cli("train_network.py", ["--config", str(config)], check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert list((output / "sample").glob("lora_000001_00_*.png"))  # the prompt file was read
    with safe_open(str(output / "lora.safetensors"), framework="pt") as handle:
        tags = json.loads(handle.metadata()["ss_tag_frequency"])
    assert set(tags) == {next(dataset.glob("*_frnc")).name}
    assert "frnc" in next(iter(tags.values()))  # captions read without the mark glued to their first tag
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("which", ["run config", "dataset TOML"])
def test_a_file_in_another_encoding_is_one_line(tiny_sd1, dataset, tmp_path, which):
    config, dataset_toml, _, output = _files(tmp_path, tiny_sd1.folder, dataset)
    wrong = config if which == "run config" else dataset_toml
    wrong.write_text(wrong.read_text(encoding="utf-8-sig"), encoding="utf-16")  # Notepad's old "Unicode"
    before = snapshot(tmp_path)

    result = run_cli("train_network.py", ["--config", str(config), "--logging.log_level", "error"], check=False)

    assert result.returncode == 2, result.stderr[-3000:]
    assert_one_line_user_error(result.stderr, str(wrong), "not a UTF-8 text file")
    assert not list(tmp_path.rglob("*.safetensors"))
    assert_unchanged(before, tmp_path)

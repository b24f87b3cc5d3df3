"""Sizes a real run never reaches are config errors, and a run whose memory estimate clearly exceeds what the machine
has is refused before the model loads, each on one line naming the setting.

The bound checks run in-process over the whole schema (every bounded whole-number option, by its sectioned and its
flat sd-scripts name); the refusals that matter to a user run the real trainer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import UnionType
from typing import Union, get_args, get_origin

import annotated_types
import pytest
from outcome import assert_one_line_user_error, assert_unchanged, snapshot
from trainer_cli import REPO, base_args, run_cli, run_python

from library.config import FLAT_ALIASES, ConfigError, load_config
from library.config.schema import SECTIONS
from library.data.dataset_config import blueprints_from_config
from library.folder_lock import LOCK_FILE
from library.training.available_memory import MEMORY_ENV

# Options that bound nothing a run allocates or repeats: a clipping threshold has no natural maximum.
UNBOUNDED = {"optimizer.max_grad_norm"}


def _kind(info) -> type | None:
    """``int`` or ``float`` for a number option (optional or not), None for any other (pairs such as the resolution
    are checked by their own validators)."""
    optional = get_origin(info.annotation) in (Union, UnionType)
    kinds = {kind for kind in (get_args(info.annotation) if optional else (info.annotation,)) if kind in (int, float)}
    return kinds.pop() if len(kinds) == 1 else None


def _number_fields() -> dict[str, object]:
    """Every whole-number and decimal option of the schema, by dotted path."""
    return {
        f"{section}.{name}": info
        for section, model in SECTIONS.items()
        for name, info in model.model_fields.items()
        if _kind(info) is not None
    }


def _upper_bound(info) -> int | float | None:
    for item in info.metadata:
        if isinstance(item, annotated_types.Le):
            return item.le
        if isinstance(item, annotated_types.Lt):
            return item.lt
    return None


BOUNDED_INTEGERS = {
    path: _upper_bound(info)
    for path, info in _number_fields().items()
    if _kind(info) is int and _upper_bound(info) is not None
}


@pytest.fixture
def run_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[model]\npretrained_model_name_or_path = 'base.safetensors'\n"
                    "[dataset]\ntrain_data_dir = 'images'\n", encoding="utf-8")
    return path


def _refusal(run_toml, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(run_toml, list(overrides))
    assert len(caught.value.messages) == 1, caught.value.messages
    return caught.value.messages[0]


def test_every_number_option_has_an_upper_bound():
    unbounded = {path for path, info in _number_fields().items() if _upper_bound(info) is None} - UNBOUNDED
    assert not unbounded
    assert len(BOUNDED_INTEGERS) > 30  # the schema was read, not an empty list


@pytest.mark.parametrize("path", sorted(BOUNDED_INTEGERS))
def test_a_whole_number_over_its_bound_is_one_line(run_toml, path):
    bound = BOUNDED_INTEGERS[path]
    line = _refusal(run_toml, f"--{path}", str(bound * 10 + 8))
    assert f"{path}: must be <=" in line or f"{path}: must be <" in line, line


FLAT_NAMES = sorted(name for name, path in FLAT_ALIASES.items() if path in BOUNDED_INTEGERS)


@pytest.mark.parametrize("name", FLAT_NAMES)
def test_a_flat_sd_scripts_name_over_its_bound_names_the_key(run_toml, name):
    path = FLAT_ALIASES[name]
    line = _refusal(run_toml, f"--{name}", str(BOUNDED_INTEGERS[path] * 10 + 8))
    assert f"--{name}: {path}: must be <" in line, line


@pytest.mark.parametrize(
    ("value", "shown"),
    [("100000", "100000"), ("512,8192", "'512,8192'"), ("[4104, 4104]", "[4104, 4104]")],
)
def test_a_resolution_over_4096_per_side_is_one_line(run_toml, value, shown):
    line = _refusal(run_toml, "--resolution", value)
    assert "dataset.resolution: each side must be a multiple of 8 from 64 to 4096" in line, line
    assert f"(got {shown})" in line
    assert load_config(run_toml, ["--resolution", "4096,64"]).dataset.resolution == (4096, 64)


@pytest.mark.parametrize(
    ("table", "line", "problem"),
    [
        ("[[datasets]]", "resolution = 100000",
         "datasets[0].resolution: each side must be a multiple of 8 from 64 to 4096"),
        ("[general]", "batch_size = 1000", "general.batch_size: input should be less than or equal to 256"),
        ("[[datasets]]", "max_bucket_reso = 8192",
         "datasets[0].max_bucket_reso: input should be less than or equal to 4096"),
        ("[general]", "caption_dropout_every_n_epochs = 1000000",
         "general.caption_dropout_every_n_epochs: input should be less than or equal to 100000"),
    ],
)
def test_a_dataset_toml_size_over_its_bound_names_file_and_key(tmp_path, run_toml, table, line, problem):
    images = tmp_path / "images"
    images.mkdir()
    dataset_toml = tmp_path / "dataset.toml"
    subsets = f"[[datasets.subsets]]\nimage_dir = '{images}'\n"
    body = f"{table}\n{line}\n" + ("" if table == "[[datasets]]" else "[[datasets]]\n") + subsets
    dataset_toml.write_text(body, encoding="utf-8")
    config = load_config(run_toml, ["--dataset.train_data_dir", "", "--dataset_config", str(dataset_toml)])

    with pytest.raises(ConfigError) as caught:
        blueprints_from_config(config.dataset)

    assert len(caught.value.messages) == 1, caught.value.messages
    assert caught.value.messages[0].startswith(f"{dataset_toml}: {problem} (got "), caught.value.messages


@pytest.mark.slow
@pytest.mark.parametrize("where", ["flag", "dataset TOML"])
def test_the_trainer_refuses_resolution_100000_on_one_line(tiny_sd1, dataset, tmp_path, where):
    output = tmp_path / "out"
    args = base_args(tiny_sd1.folder, dataset, output)
    if where == "flag":
        args += ["--resolution", "100000"]
        expected = "--resolution: dataset.resolution: each side must be a multiple of 8 from 64 to 4096 (got 100000)"
    else:
        dataset_toml = tmp_path / "dataset.toml"
        dataset_toml.write_text(f"[[datasets]]\nresolution = 100000\n[[datasets.subsets]]\nimage_dir = "
                                f"'{next(dataset.glob('*_frnc'))}'\n", encoding="utf-8")
        args += ["--train_data_dir", "", "--dataset_config", str(dataset_toml)]
        expected = f"{dataset_toml}: datasets[0].resolution: each side must be a multiple of 8 from 64 to 4096"
    before = snapshot(tmp_path)

    result = run_cli("train_network.py", [*args, "--logging.log_level", "error"], check=False)

    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in assert_one_line_user_error(result.stderr)
    assert_unchanged(before, tmp_path)
    assert not list(output.rglob("*.safetensors"))


# A start writes these into the output folder before the memory check; nothing else may appear.
START_UP_FILES = {"config.toml", "progress.jsonl", "logs", LOCK_FILE}


def _train(args: list[str], env: dict[str, str] | None = None):
    return run_python([str(REPO / "train_network.py"), *args], "train_network.py", check=False, env=env)


@pytest.mark.slow
def test_a_run_whose_estimate_exceeds_the_machine_is_refused_before_loading(tiny_sd1, dataset, tmp_path):
    """4096 px at 64 images a step needs hundreds of GiB for activations, even on a tiny model: no machine here."""
    output = tmp_path / "out"
    before = snapshot(dataset)

    result = _train([*base_args(tiny_sd1.folder, dataset, output), "--resolution", "4096", "--train_batch_size", "64"])

    assert result.returncode == 1, result.stderr[-3000:]
    line = assert_refused_line(result.stderr)
    assert line.startswith("error: dataset.resolution = 4096 with dataset.batch_size = 64 needs about ")
    assert "for activations" in line and "available (RAM and swap)" in line
    assert line.endswith("turn on training.gradient_checkpointing, or set training.skip_memory_check = true")
    assert "memory estimate: at least" in result.stderr
    assert "unet: " not in result.stderr  # the model's summary: it never loaded
    assert {path.name for path in output.iterdir()} <= START_UP_FILES
    assert_unchanged(before, dataset)


@pytest.mark.slow
def test_skip_memory_check_starts_a_run_the_estimate_refuses(tiny_sd1, dataset, tmp_path):
    """The machine's figure replaced by a tiny one, as the environment variable allows: refused, then started."""
    args = [*base_args(tiny_sd1.folder, dataset, tmp_path / "out"), "--max_train_steps", "1"]
    small_machine = {MEMORY_ENV: str(2**20)}

    refused = _train(args, env=small_machine)
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"1 MiB available (${MEMORY_ENV})" in assert_refused_line(refused.stderr)
    assert not (tmp_path / "out" / "lora.safetensors").exists()

    started = _train([*args, "--skip_memory_check"], env=small_machine)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "training.skip_memory_check is set, so the run starts" in started.stderr
    assert (tmp_path / "out" / "lora.safetensors").is_file()


def assert_refused_line(stderr: str) -> str:
    """Exactly one ``error:`` line and no traceback; the line is returned."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


_AMOUNT = r"(\d+(?:\.\d+)?) (GiB|MiB)"


def _bytes(number: str, unit: str) -> float:
    return float(number) * (2**30 if unit == "GiB" else 2**20)


def _peak_and_estimate(args: list[str]) -> tuple[float, float]:
    """(peak resident bytes beyond what the process held at the check, the estimate), from a real run."""
    process = subprocess.Popen([sys.executable, str(REPO / "train_network.py"), *args], cwd=REPO,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, stderr[-3000:]
    match = re.search(rf"memory estimate: at least {_AMOUNT} .* beyond the {_AMOUNT} this process holds", stderr)
    assert match, stderr[-3000:]
    estimate, held = _bytes(*match.group(1, 2)), _bytes(*match.group(3, 4))
    return usage.ru_maxrss * 1024 - held, estimate


@pytest.mark.slow
@pytest.mark.parametrize(("family", "layout", "extra"), [
    ("sd1", "folder", []),
    ("sdxl", "single_file", ["--gradient_checkpointing"]),
])
def test_the_estimate_is_a_lower_bound_of_a_real_run(tiny_model_factory, dataset, tmp_path, family, layout, extra):
    """Runs big enough for their activations to count: the estimate stays under what the run took, within 4x."""
    model = getattr(tiny_model_factory(family), layout)
    args = [*base_args(model, dataset, tmp_path / "out"), "--resolution", "384", "--max_train_steps", "1",
            "--logging.tensorboard", "false", *extra]

    peak, estimate = _peak_and_estimate(args)

    assert peak / 4 <= estimate <= peak, (estimate, peak)

"""The JSON Schema the GUI renders, the shipped presets, and `python -m library.config` as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from library.config import FurnaceConfig, load_config, loads_config
from library.config.keys import FIELD_PATHS

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs").glob("*.toml"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "library.config", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_json_schema_documents_every_section_and_field():
    schema = FurnaceConfig.model_json_schema()
    definitions = schema["$defs"]
    assert set(schema["properties"]) == set(FurnaceConfig.model_fields)
    for section, field in FurnaceConfig.model_fields.items():
        section_schema = definitions[field.annotation.__name__]
        assert section_schema["description"], section
        assert section_schema["additionalProperties"] is False
        for name, field_schema in section_schema["properties"].items():
            assert field_schema.get("description"), f"{section}.{name}"
            assert "default" in field_schema, f"{section}.{name}"
    network = definitions["NetworkSection"]["properties"]
    assert (network["dim"]["minimum"], network["dim"]["maximum"], network["dim"]["default"]) == (1, 1024, 16)
    assert "AdamW8bit" in definitions["OptimizerSection"]["properties"]["type"]["enum"]
    assert definitions["TrainingSection"]["properties"]["mixed_precision"]["enum"] == ["no", "fp16", "bf16"]


# A measured amount: "~0.6 GiB", "30 % less", "2.3x faster", "12 s". The README's benchmark table holds those.
MEASURED = re.compile(r"~\s*\d|\d\s*(GiB|GB|MiB|MB|%|s|ms|min)\b|\d\s*[x×]\s*(faster|slower|less|more)", re.IGNORECASE)


def test_option_descriptions_hold_no_measured_figures():
    measured = {path: info.description for path, info in FIELD_PATHS.items() if MEASURED.search(info.description)}
    assert measured == {}
    assert MEASURED.search("adds ~0.6 GiB of VAE activations") and MEASURED.search("2.3x faster")


@pytest.mark.parametrize("preset", PRESETS, ids=[path.name for path in PRESETS])
def test_presets_validate(preset):
    config = load_config(preset)
    assert config.model.pretrained_model_name_or_path


def test_quickstart_presets_train_the_toy_world_concept():
    """Both quickstart presets start from the shipped toy-world model, train on the dataset quickstart.sh writes, and
    preview prompts with and without the concept's trigger word; the LoRA preset ends with its compare grid."""
    from library.toyworld.base_model import base_model_file
    from library.toyworld.world import IMAGE_SIZE, QUICKSTART_CONCEPT

    trigger = QUICKSTART_CONCEPT.trigger
    quickstart_script = (REPO / "quickstart.sh").read_text(encoding="utf-8")
    for name in ("quickstart.toml", "dreambooth_quickstart.toml"):
        config = load_config(REPO / "configs" / name)
        assert REPO / config.model.pretrained_model_name_or_path == base_model_file()
        assert config.dataset.resolution == (IMAGE_SIZE, IMAGE_SIZE)
        assert f"--out {config.dataset.train_data_dir}" in quickstart_script
        prompts = (REPO / config.sample.prompts).read_text(encoding="utf-8").splitlines()
        lines = [line for line in prompts if line.strip() and not line.startswith("#")]
        assert any(trigger in line for line in lines) and any(trigger not in line for line in lines)
        assert all(f"--w {IMAGE_SIZE} --h {IMAGE_SIZE}" in line for line in lines)
    lora = load_config(REPO / "configs" / "quickstart.toml")
    assert lora.sample.compare_at_end and 0.0 in lora.sample.compare_strengths


def test_sd15_preset_is_realistic():
    config = load_config(REPO / "configs" / "lora_sd15.toml")
    assert config.dataset.resolution == (512, 512)
    assert (config.network.dim, config.network.alpha) == (32, 16.0)
    assert config.optimizer.type == "AdamW8bit" and config.optimizer.lr_scheduler == "cosine"
    assert config.optimizer.lr_warmup_steps > 0
    assert config.training.mixed_precision == "fp16" and config.training.gradient_checkpointing
    assert config.dataset.cache_latents


@pytest.mark.slow
def test_cli_schema_prints_json_schema():
    result = _run("schema")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == FurnaceConfig.model_json_schema()


@pytest.mark.slow
def test_cli_check_prints_resolved_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('network_dim = 8\n[model]\npretrained_model_name_or_path = "m"\n[dataset]\ntrain_data_dir = "d"\n')
    result = _run("check", str(path), "--network_alpha", "2", "--resolution", "512,768")
    assert result.returncode == 0, result.stderr
    resolved = tomllib.loads(result.stdout)
    assert resolved["network"]["dim"] == 8 and resolved["network"]["alpha"] == 2.0
    assert resolved["dataset"]["resolution"] == [512, 768]
    assert loads_config(result.stdout) == load_config(path, ["--network_alpha", "2", "--resolution", "512,768"])


@pytest.mark.slow
def test_cli_dump_prints_resolved_toml():
    result = _run("dump", "configs/quickstart.toml")
    assert result.returncode == 0, result.stderr
    assert loads_config(result.stdout) == load_config(REPO / "configs" / "quickstart.toml")


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("[network]\ndim = 0\n", [], "{path}: network.dim: must be >= 1 (got 0)"),
        ("[network]\ndimm = 4\n", [], "{path}: unknown key 'network.dimm' — did you mean 'network.dim'?"),
        ("[network\n", [], "{path}: line 5, column 9: invalid TOML"),
        ("", ["--network_dim", "-3"], "--network_dim: network.dim: must be >= 1 (got -3)"),
    ],
)
@pytest.mark.slow
def test_cli_check_bad_config_exits_2_without_traceback(tmp_path, text, overrides, expected):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\npretrained_model_name_or_path = "m"\n[dataset]\ntrain_data_dir = "d"\n' + text)
    result = _run("check", str(path), *overrides)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[0].startswith(expected.format(path=path))


@pytest.mark.slow
def test_cli_check_missing_file(tmp_path):
    result = _run("check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr == f"{tmp_path / 'nope.toml'}: config file not found\n"


@pytest.mark.slow
def test_loading_a_config_does_not_import_torch():
    code = "import sys, library.config as c; c.load_config('configs/quickstart.toml'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_every_option_and_section_has_a_readable_title():
    """The GUI labels options with the schema's titles: words, not keys, and no two alike within a section."""
    schema = FurnaceConfig.model_json_schema()
    sections = {name: schema["$defs"][ref["$ref"].split("/")[-1]] for name, ref in schema["properties"].items()}
    assert [schema["properties"][name]["title"] for name in ("textual_inversion", "deepspeed")] == [
        "Textual inversion", "DeepSpeed"]
    for name, section in sections.items():
        titles = [option["title"] for option in section["properties"].values()]
        assert all("_" not in title and title[:1].isupper() for title in titles), (name, titles)
        assert len(set(titles)) == len(titles), (name, titles)
    dataset = sections["dataset"]["properties"]
    assert (dataset["min_bucket_reso"]["title"], dataset["train_data_dir"]["title"]) == (
        "Min bucket resolution", "Dataset folder")

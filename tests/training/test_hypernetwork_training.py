"""train_hypernetwork.py end to end on a tiny SD1 model: A1111's .pt and the .safetensors at every save, pruned
together; previews, TensorBoard and progress events; ``inspect`` reads both files; a resume equals one long run; pairs for every enabled width, and a run continuing
from a saved file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from trainer_cli import base_args, read_events, run_cli, run_python

from library.models.checkpoint_io import read_safetensors_metadata
from library.models.loader import load_base_model
from library.networks.hypernetwork import context_widths
from library.networks.hypernetwork_file import read_hypernetwork

pytestmark = pytest.mark.slow  # these tests start trainers

HYPERNETWORK = {"output_name": "hn", "learning_rate": 1e-2, "hypernetwork.activation_func": "relu",
                "hypernetwork.layer_structure": "1, 2, 1"}


def _args(tiny_model_factory, dataset, output, **overrides) -> list[str]:
    args = base_args(tiny_model_factory("sd1").folder, dataset, output, **{**HYPERNETWORK, **overrides})
    pairs = [args[i:i + 2] for i in range(0, len(args), 2)]
    return [token for pair in pairs if not pair[0].startswith("--network_") for token in pair]  # no LoRA rank


@pytest.fixture(scope="module")
def hypernetwork_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """One 6-step run saving every 2 steps (keeping the newest), previews at step 2, state saved at the end."""
    output = tmp_path_factory.mktemp("hypernetwork-run")
    prompts = output.parent / "hypernetwork-prompts.txt"
    prompts.write_text("a frnc circle --w 64 --h 64 --s 2 --d 1\n", encoding="utf-8")
    run_cli("train_hypernetwork.py", [
        *_args(tiny_model_factory, concept_dataset, output, max_train_steps=6), "--save_every_n_steps", "2",
        "--output.save_last_n", "1", "--save_state_on_train_end", "true", "--sample.prompts", str(prompts),
        "--sample.every_n_steps", "2", "--logging.tensorboard", "true",
    ])
    return output


def test_each_save_writes_the_pt_and_the_safetensors_and_pruning_takes_both(hypernetwork_run):
    names = sorted(path.name for path in hypernetwork_run.glob("hn*"))
    assert names == ["hn-step00000004.pt", "hn-step00000004.safetensors", "hn.pt", "hn.safetensors"]
    final = torch.load(hypernetwork_run / "hn.pt", weights_only=True)
    step4 = torch.load(hypernetwork_run / "hn-step00000004.pt", weights_only=True)
    assert (final["step"], step4["step"], final["name"]) == (6, 4, "hn")
    assert final["activation_func"] == "relu" and final["layer_structure"] == [1.0, 2.0, 1.0]
    assert final["sd_checkpoint"] is None and final["sd_checkpoint_name"] == "sd1"  # a diffusers folder: no hash
    (width,) = [key for key in final if isinstance(key, int)]
    read = read_hypernetwork(hypernetwork_run / "hn.safetensors")
    for role, state in enumerate(final[width]):
        assert all(torch.equal(tensor, read.pairs[width][role][name]) for name, tensor in state.items())
    assert not torch.equal(final[width][0]["linear.2.weight"], step4[width][0]["linear.2.weight"])


def test_previews_tensorboard_and_progress_events(hypernetwork_run):
    events = read_events(hypernetwork_run)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 6
    assert [event["step"] for event in events if event["event"] == "checkpoint"] == [2, 4, 6]
    assert {event["step"] for event in events if event["event"] == "sample"} == {2, 4, 6}
    assert all("lr/hypernetwork" in event["lr"] for event in events if event["event"] == "step")
    assert (hypernetwork_run / "sample").is_dir() and list((hypernetwork_run / "logs").rglob("events.out.*"))


def test_inspect_recognises_both_files(hypernetwork_run):
    for name in ("hn.pt", "hn.safetensors"):
        report = json.loads(run_python(["-m", "library.tools", "inspect", str(hypernetwork_run / name), "--json"],
                                       "inspect").stdout)
        assert (report["type"], report["step"], report["activation_func"]) == ("hypernetwork", 6, "relu")
        assert report["layer_structure"] == [1.0, 2.0, 1.0] and len(report["widths"]) == 1


def test_resuming_equals_one_long_run(hypernetwork_run, tiny_model_factory, concept_dataset, tmp_path):
    reference = tmp_path / "reference"
    run_cli("train_hypernetwork.py", _args(tiny_model_factory, concept_dataset, reference, max_train_steps=8))
    staged = tmp_path / "staged"
    shutil.copytree(hypernetwork_run, staged)
    run_cli("train_hypernetwork.py", [*_args(tiny_model_factory, concept_dataset, staged, max_train_steps=8),
                                      "--resume", str(staged / "state")])
    resumed = torch.load(staged / "hn.pt", weights_only=True)
    expected = torch.load(reference / "hn.pt", weights_only=True)
    (width,) = [key for key in expected if isinstance(key, int)]
    assert resumed["step"] == expected["step"] == 8
    for role in (0, 1):
        different = [name for name, tensor in expected[width][role].items()
                     if not torch.equal(tensor, resumed[width][role][name])]
        assert not different, different


def test_options_of_other_trainers_are_refused(tiny_model_factory, concept_dataset, tmp_path):
    result = run_cli("train_hypernetwork.py", [*_args(tiny_model_factory, concept_dataset, tmp_path / "out"),
                                               "--network.ema_decay", "0.9"], check=False)
    assert result.returncode == 2 and "a hypernetwork run keeps no EMA" in result.stderr
    assert not (tmp_path / "out").exists()


def test_enabled_widths_are_saved_as_a1111_keys_and_a_file_continues_training(tiny_model_factory, concept_dataset,
                                                                              tmp_path):
    """enable_sizes gives a pair to self-attention widths too (A1111's 320/640/1280 modules; here the tiny UNet's);
    network_weights continues from the .pt: a step at a tiny rate moves the weights by about that rate only, and
    A1111's step counts on from the file's while ss_steps counts this run's."""
    widths = context_widths(load_base_model(tiny_model_factory("sd1").folder).unet)
    assert len(widths) > 1  # the text context and the feature widths
    first = tmp_path / "first"
    run_cli("train_hypernetwork.py", [*_args(tiny_model_factory, concept_dataset, first, max_train_steps=2),
                                      "--hypernetwork.enable_sizes", ", ".join(map(str, widths))])
    trained = torch.load(first / "hn.pt", weights_only=True)
    assert sorted(key for key in trained if isinstance(key, int)) == widths

    continued = tmp_path / "continued"
    result = run_cli("train_hypernetwork.py", [
        *_args(tiny_model_factory, concept_dataset, continued, max_train_steps=1, learning_rate=1e-7),
        "--hypernetwork.network_weights", str(first / "hn.pt")])
    assert f"continuing from the hypernetwork in {first / 'hn.pt'}" in result.stderr
    after = torch.load(continued / "hn.pt", weights_only=True)
    assert sorted(key for key in after if isinstance(key, int)) == widths
    assert (trained["step"], after["step"]) == (2, 3)
    metadata = read_safetensors_metadata(continued / "hn.safetensors")
    assert (metadata["hypernetwork.step"], metadata["ss_steps"]) == ("3", "1")
    for width in widths:  # a fresh start (random weights) would be nowhere near the file's
        for role in (0, 1):
            for name, tensor in trained[width][role].items():
                assert (after[width][role][name] - tensor).abs().max() < 1e-5, (width, role, name)

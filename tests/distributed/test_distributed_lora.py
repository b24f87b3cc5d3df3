"""Two CPU processes (DDP over gloo) train one LoRA: identical weights on every rank, each image once per epoch
across ranks, files written once by rank 0 (on tiny SD1 and tiny FLUX.1-dev), and a resumed run that ends
bit-identical to the uninterrupted one."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from library.models.families import get_family
from library.networks.lora_layouts import adapter_tensors

from launch_cli import REPO, accelerate_launch, accelerate_launch_machines
from trainer_cli import base_args, read_events

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("rank_probe.py")
IMAGES, EPOCHS, PROCESSES = 6, 2, 2


@pytest.fixture(scope="module")
def six_images(tmp_path_factory) -> Path:
    from library.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("six")
    write_dataset(root, count=IMAGES, repeats=1, seed=5)
    return root


def _args(tiny_model, dataset: Path, output: Path, **overrides) -> list[str]:
    settings = {"train_batch_size": 1, "max_train_epochs": EPOCHS, **overrides}
    return base_args(tiny_model.folder, dataset, output, **settings)


@pytest.fixture(scope="module")
def probed_runs(tiny_model_factory, six_images, tmp_path_factory) -> Callable[[str], tuple[Path, Path]]:
    """One 2-process run through the probe per family, started when a test first asks for it:
    family -> (output dir, probe dir)."""

    @functools.cache
    def run(family: str) -> tuple[Path, Path]:
        root = tmp_path_factory.mktemp(f"ddp-{family}")
        output, probe = root / "run", root / "probe"
        accelerate_launch(PROBE, [str(probe), *_args(tiny_model_factory(family), six_images, output)])
        return output, probe

    return run


@pytest.fixture(scope="module", params=["sd1", "flux1-dev"])
def probed_run(request, probed_runs) -> tuple[Path, Path, str]:
    """The run on each family (FLUX.1: the packed-token transformer, CLIP-L adapters and the flow-matching step):
    (output dir, probe dir, family)."""
    return (*probed_runs(request.param), request.param)


@pytest.fixture(scope="module")
def sd1_run(probed_runs) -> tuple[Path, Path]:
    return probed_runs("sd1")


def _assert_identical(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:2]}"


def test_ranks_end_with_identical_weights_and_rank0_writes_once(probed_run):
    output, probe, family = probed_run
    ranks = [load_file(probe / f"rank{rank}.safetensors") for rank in range(PROCESSES)]
    _assert_identical(ranks[0], ranks[1])
    saved = output / "lora.safetensors"  # in the family's file layout (FLUX.1: BFL names, q, k, v fused)
    _assert_identical(ranks[0], adapter_tensors(get_family(family), load_file(saved), str(saved)))
    assert any(key.endswith("lora_up.weight") and ranks[0][key].abs().sum() > 0 for key in ranks[0]), "no training"
    events = read_events(output)
    kinds = Counter(event["event"] for event in events)
    assert kinds["start"] == 1 and kinds["done"] == 1 and kinds["checkpoint"] == 1
    assert [p.name for p in output.glob("*.safetensors")] == ["lora.safetensors"]


def test_step_and_epoch_counts_cover_each_image_once_per_epoch(probed_run):
    output, probe, _ = probed_run
    reports = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in range(PROCESSES)]
    assert {report["world_size"] for report in reports} == {PROCESSES}
    steps_per_epoch = IMAGES // PROCESSES  # batch size 1: each rank takes half the images per optimizer step
    events = read_events(output)
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, EPOCHS * steps_per_epoch + 1))
    assert [(e["epoch"], e["step"]) for e in events if e["event"] == "epoch"] == [
        (epoch, epoch * steps_per_epoch) for epoch in range(1, EPOCHS + 1)
    ]
    for epoch in range(EPOCHS):
        drawn = [path for report in reports for batch in report["epochs"][str(epoch)] for path in batch]
        assert len(drawn) == IMAGES and len(set(drawn)) == IMAGES, f"epoch {epoch}: {Counter(drawn)}"
        assert all(len(report["epochs"][str(epoch)]) == steps_per_epoch for report in reports)


def test_resume_with_two_processes_is_exact(sd1_run, tiny_sd1, six_images, tmp_path):
    reference, _ = sd1_run
    script = REPO / "train_network.py"
    staged = tmp_path / "staged"
    first = _args(tiny_sd1, six_images, staged, max_train_epochs=1)
    accelerate_launch(script, [*first, "--save_state_on_train_end", "true"])
    state = staged / "state"
    assert sorted(p.name for p in state.glob("random_states_*.pkl")) == [
        f"random_states_{rank}.pkl" for rank in range(PROCESSES)
    ]
    accelerate_launch(script, [*_args(tiny_sd1, six_images, staged), "--resume", str(state)])
    starts = [event for event in read_events(staged) if event["event"] == "start"]
    assert [event["resumed"] for event in starts] == [False, True] and starts[1]["step"] == IMAGES // PROCESSES
    _assert_identical(load_file(reference / "lora.safetensors"), load_file(staged / "lora.safetensors"))


@pytest.fixture(scope="module")
def two_machines(tiny_sd1, six_images, tmp_path_factory) -> tuple[Path, Path]:
    """The sd1 run again, keeping an EMA, from two launchers with ``--num_machines 2 --machine_rank 0|1`` meeting at
    machine 0's address (loopback here): (output dir, probe dir). The EMA only reads the weights, so the live
    weights still train exactly as without it."""
    root = tmp_path_factory.mktemp("two-machines")
    output, probe = root / "run", root / "probe"
    ema = ["--network.ema_decay", "0.9", "--network.ema_save", "both"]
    accelerate_launch_machines(PROBE, [str(probe), *_args(tiny_sd1, six_images, output), *ema])
    return output, probe


def test_every_rank_keeps_the_same_ema_without_communicating(two_machines):
    """Each rank updates its own EMA from the weights DDP keeps identical: the averages match bit for bit, and
    rank 0's is the EMA file it saved (the raw file beside it holds the live weights)."""
    output, probe = two_machines
    averages = [load_file(probe / f"rank{rank}-ema.safetensors") for rank in range(PROCESSES)]
    _assert_identical(averages[0], averages[1])
    _assert_identical(averages[0], load_file(output / "lora.safetensors"))
    live = load_file(probe / "rank0.safetensors")
    _assert_identical(live, load_file(output / "lora-raw.safetensors"))
    assert any(not torch.equal(averages[0][key], live[key]) for key in averages[0])


def test_two_machines_train_exactly_like_two_processes_on_one(two_machines, sd1_run):
    """The same ranks, data shards and seeds as one machine with two processes, so the same LoRA, bit for bit,
    written once (by machine 0)."""
    reference, _ = sd1_run
    output, probe = two_machines
    reports = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in range(PROCESSES)]
    assert [report["world_size"] for report in reports] == [PROCESSES, PROCESSES]
    _assert_identical(load_file(probe / "rank0.safetensors"), load_file(probe / "rank1.safetensors"))
    _assert_identical(load_file(reference / "lora.safetensors"), load_file(output / "lora-raw.safetensors"))
    kinds = Counter(event["event"] for event in read_events(output))
    assert kinds["start"] == kinds["done"] == kinds["checkpoint"] == 1

"""Scores of a model on the toy world: seeded samples of prompts, judged, as the share that shows what was asked.

``concept``: prompts with a concept's trigger word ("a frnc circle on a white background"), right when the judge sees
the concept's colour and shape. ``prior``: prompts of the pretraining vocabulary without any trigger ("a red square
on a white background"), right when the judge sees what they name; a LoRA that bleeds into them lowers it.
``class``: the concept's class prompt ("a circle on a white background"), right when the judge sees the class's shape
in a colour the base model knows. A run that lets the class word take on the concept (DreamBooth's "language
drift") draws the concept's colour there instead; prior preservation exists to prevent that. The samples are
rendered by the same code that draws a training run's previews, so a score is what a user would see.

Prompts are encoded with the model's own tokenizers and text encoders, so a model with a textual-inversion
embedding loaded for the trigger word (``library.networks.embedding_file.load_embedding``) is scored with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from library.sampling.preview import LiveModel, generate_images
from library.sampling.prompts import SamplePrompt
from library.toyworld.judge import Verdict, judge
from library.toyworld.world import IMAGE_SIZE, PRETRAINING_COLOURS, SHAPES, Concept, caption, class_caption

SAMPLE_STEPS = 12  # the judge's verdicts match 20 steps' here; at 6 steps the pictures are too rough to judge
CFG_SCALE = 5.0
SAMPLER = "ddim"
BATCH_SIZE = 16  # samples rendered together (same pictures as one by one, several times faster on a CPU)


@dataclass(frozen=True)
class Probe:
    """A prompt to sample and what its image should show: one of ``colours`` and ``shape``."""

    prompt: SamplePrompt
    colours: frozenset[str]
    shape: str


@dataclass(frozen=True)
class Judged:
    probe: Probe
    image: Image.Image
    verdict: Verdict

    @property
    def right(self) -> bool:
        return self.verdict.colour in self.probe.colours and self.verdict.shape == self.probe.shape


def _probe(text: str, seed: int, colours: Sequence[str], shape: str) -> Probe:
    prompt = SamplePrompt(prompt=text, width=IMAGE_SIZE, height=IMAGE_SIZE, steps=SAMPLE_STEPS,
                          cfg_scale=CFG_SCALE, seed=seed, sampler=SAMPLER)
    return Probe(prompt, frozenset(colours), shape)


def concept_prompt(concept: Concept) -> str:
    """How a user prompts the concept: the trigger in place of the colour word."""
    return caption(concept.trigger, concept.class_word)


def concept_probes(concept: Concept, seeds: Sequence[int]) -> list[Probe]:
    return [_probe(concept_prompt(concept), seed, [concept.colour], concept.shape) for seed in seeds]


def prior_probes(seeds: Sequence[int]) -> list[Probe]:
    """Every colour x shape prompt of the pretraining vocabulary, once per seed (seeds differ per prompt)."""
    pairs = [(colour, shape) for shape in SHAPES for colour in PRETRAINING_COLOURS]
    return [
        _probe(caption(colour, shape), seed * len(pairs) + index, [colour], shape)
        for seed in seeds
        for index, (colour, shape) in enumerate(pairs)
    ]


def class_probes(concept: Concept, seeds: Sequence[int]) -> list[Probe]:
    return [_probe(class_caption(concept.class_word), seed, PRETRAINING_COLOURS, concept.class_word) for seed in seeds]


def judge_probes(model: LiveModel, probes: Sequence[Probe]) -> list[Judged]:
    """Render every probe with ``model``'s live weights and judge the pictures."""
    images = generate_images(model, [probe.prompt for probe in probes], batch_size=BATCH_SIZE)
    return [Judged(probe, image, judge(image)) for probe, image in zip(probes, images)]


def share_right(judged: Sequence[Judged]) -> float:
    return sum(item.right for item in judged) / max(1, len(judged))


@dataclass(frozen=True)
class Scores:
    """Shares (0-1) of samples judged to show what their prompts ask for (see the module docstring)."""

    concept: float
    prior: float
    kept_class: float

    def as_dict(self) -> dict[str, float]:
        return {"concept": self.concept, "prior": self.prior, "class": self.kept_class}


def concept_score(model: LiveModel, concept: Concept, seeds: Sequence[int]) -> float:
    """The concept score alone: for weights that only the trigger word's prompts can see (an embedding)."""
    return share_right(judge_probes(model, concept_probes(concept, seeds)))


def score_model(model: LiveModel, concept: Concept, concept_seeds: Sequence[int], prior_seeds: Sequence[int],
                class_seeds: Sequence[int]) -> Scores:
    """Concept, prior and class scores of ``model`` as it is now (adapters and all)."""
    return Scores(
        concept=concept_score(model, concept, concept_seeds),
        prior=share_right(judge_probes(model, prior_probes(prior_seeds))),
        kept_class=share_right(judge_probes(model, class_probes(concept, class_seeds))),
    )

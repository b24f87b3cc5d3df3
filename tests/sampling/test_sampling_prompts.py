"""Prompt files: the sd-scripts line syntax, the structured TOML/JSON forms, defaults and one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pydantic import ValidationError

from library.config.sections_output import SampleSection
from library.sampling.prompts import (
    PromptFileError,
    SamplePrompt,
    check_prompt_lines,
    load_prompts,
    run_defaults,
    section_prompts,
)

DEFAULTS = SamplePrompt(
    prompt="", negative_prompt="lowres", width=64, height=128, steps=3, cfg_scale=5.0, seed=7, sampler="euler_a"
)


def _write(tmp_path, text: str, name: str = "prompts.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a photo of sks dog", {}),
        ("a dog --n blurry, low quality", {"negative_prompt": "blurry, low quality"}),
        ("a dog --w 96 --h 72", {"width": 96, "height": 72}),
        ("a dog --s 12 --l 4.5 --d 1234", {"steps": 12, "cfg_scale": 4.5, "seed": 1234}),
        ("a dog --ss k_euler", {"sampler": "euler"}),
        ("a dog --ss DPMSolver++", {"sampler": "dpmsolver++"}),
        ("a dog --n   ", {"negative_prompt": ""}),
        ("  masterpiece, 1girl   --W 80 --D 0 ", {"prompt": "masterpiece, 1girl", "width": 80, "seed": 0}),
        ("--n only negative", {"prompt": "", "negative_prompt": "only negative"}),
        ("a dog --l 0", {"cfg_scale": 0.0}),
        ("a dog --w\t72", {"width": 72}),
        ("a dog--w 64", {"prompt": "a dog--w 64"}),  # "--" glued to a word is prompt text, as in sd-scripts
    ],
)
def test_line_options(tmp_path, line, expected):
    (prompt,) = load_prompts(_write(tmp_path, line + "\n"), DEFAULTS)
    wanted = {"prompt": line.split(" --")[0].strip(), **expected}
    for name, value in wanted.items():
        assert getattr(prompt, name) == value, name
    untouched = set(SamplePrompt.__dataclass_fields__) - set(wanted)
    for name in untouched:
        assert getattr(prompt, name) == getattr(DEFAULTS, name), name


def test_comments_blank_lines_and_defaults(tmp_path):
    path = _write(
        tmp_path,
        "# previews for the sks run\n\n   \nfirst --d 1\n  # indented comment\nsecond\n\nthird --s 9\n",
    )
    prompts = load_prompts(path, DEFAULTS)
    assert [p.prompt for p in prompts] == ["first", "second", "third"]
    assert [p.seed for p in prompts] == [1, DEFAULTS.seed, DEFAULTS.seed]
    assert [p.steps for p in prompts] == [DEFAULTS.steps, DEFAULTS.steps, 9]


def test_non_ascii_prompts_and_byte_order_mark(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\ufeff日本の猫, 可愛い 🐱 --n ぼやけた\nčaj s citrónom --w 72\n", encoding="utf-8")
    prompts = load_prompts(path, DEFAULTS)
    assert prompts[0].prompt == "日本の猫, 可愛い 🐱"
    assert prompts[0].negative_prompt == "ぼやけた"
    assert (prompts[1].prompt, prompts[1].width) == ("čaj s citrónom", 72)


def test_without_caller_defaults_uses_sample_prompt_defaults(tmp_path):
    (prompt,) = load_prompts(_write(tmp_path, "a dog\n"))
    assert prompt == SamplePrompt(prompt="a dog")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a dog --w abc", ":3: --w must be a whole number, got 'abc'"),
        ("a dog --w 100", ":3: --w must be a multiple of 8, got 100"),
        ("a dog --h 32", ":3: --h must be between 64 and 4096, got 32"),
        ("a dog --w 64.0", ":3: --w must be a whole number"),
        ("a dog --s 0", ":3: --s must be between 1 and 1000, got 0"),
        ("a dog --l -1", ":3: --l must be between 0 and 50"),
        ("a dog --l nan", ":3: --l must be between 0 and 50"),
        ("a dog --l x", ":3: --l must be a number, got 'x'"),
        ("a dog --d -5", ":3: --d must be between 0 and 4294967295, got -5"),
        ("a dog --ss warp", ":3: --ss unknown sampler 'warp'; expected one of ddim,"),
        ("a dog --cn canny", ":3: unknown option --cn; expected one of --n, --w"),
        ("a dog --w 64 --w 72", ":3: option --w is given twice"),
        ("a dog --w", ":3: --w must be a whole number, got ''"),
    ],
)
def test_bad_values_name_file_and_line(tmp_path, body, message):
    path = _write(tmp_path, f"# header\nfine prompt\n{body}\nlater prompt\n")
    with pytest.raises(PromptFileError) as raised:
        load_prompts(path, DEFAULTS)
    text = str(raised.value)
    assert text.startswith(str(path) + ":3: "), text
    assert message in text
    assert "\n" not in text


def test_missing_empty_and_undecodable_files(tmp_path):
    with pytest.raises(PromptFileError, match="prompt file not found"):
        load_prompts(tmp_path / "nope.txt")
    with pytest.raises(PromptFileError, match="no prompts found"):
        load_prompts(_write(tmp_path, "# only a comment\n\n"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(PromptFileError, match="save it as UTF-8"):
        load_prompts(latin1)


def test_bad_default_is_reported_before_reading_prompts(tmp_path):
    path = _write(tmp_path, "a dog\n")
    with pytest.raises(PromptFileError, match="default width must be a multiple of 8"):
        load_prompts(path, SamplePrompt(prompt="", width=100))


def test_toml_prompt_tables(tmp_path):
    path = _write(
        tmp_path,
        '[[prompt]]\nprompt = "a dog"\nwidth = 96\nsample_steps = 4\nscale = 3.5\nseed = 11\n'
        'sample_sampler = "k_dpm_2_a"\nnegative_prompt = "bad"\n\n[[prompt]]\nprompt = "a cat"\n',
        "prompts.toml",
    )
    first, second = load_prompts(path, DEFAULTS)
    assert first == SamplePrompt("a dog", "bad", 96, DEFAULTS.height, 4, 3.5, 11, "dpm_2_a")
    assert second == SamplePrompt("a cat", DEFAULTS.negative_prompt, 64, 128, 3, 5.0, 7, "euler_a")


def test_toml_shared_keys_with_subsets(tmp_path):
    path = _write(
        tmp_path,
        '[prompt]\nwidth = 72\nseed = 3\n\n[[prompt.subset]]\nprompt = "one"\n\n'
        '[[prompt.subset]]\nprompt = "two"\nseed = 4\n',
        "prompts.toml",
    )
    prompts = load_prompts(path, DEFAULTS)
    assert [(p.prompt, p.width, p.seed) for p in prompts] == [("one", 72, 3), ("two", 72, 4)]


def test_json_list(tmp_path):
    entries = [{"prompt": "ein Hund", "height": 64, "scale": 2}, {"prompt": "a cat", "sample_sampler": "ddim"}]
    path = _write(tmp_path, json.dumps(entries, ensure_ascii=False), "prompts.json")
    first, second = load_prompts(path, DEFAULTS)
    assert (first.prompt, first.height, first.cfg_scale) == ("ein Hund", 64, 2.0)
    assert (second.prompt, second.sampler) == ("a cat", "ddim")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.toml", '[[prompt]]\nprompt = "a"\n\n[[prompt]]\nprompt = "b"\nwidth = "wide"\n',
         "p.toml: prompt[1]: width must be a whole number, got 'wide'"),
        ("p.toml", '[[prompt]]\nprompt = "a"\nwidht = 64\n', "p.toml: prompt[0]: unknown key 'widht'"),
        ("p.toml", '[[prompt]]\nwidth = 64\n', "p.toml: prompt[0]: missing the prompt key"),
        ("p.toml", '[[prompt]]\nprompt = 5\n', "p.toml: prompt[0]: prompt must be text, got 5"),
        ("p.toml", '[[prompt]]\nprompt = "a"\nseed = true\n', "p.toml: prompt[0]: seed must be a whole number"),
        ("p.toml", "prompt = [\n", "p.toml: invalid TOML"),
        ("p.toml", 'title = "x"\n', "p.toml: expected [[prompt]] tables"),
        ("p.json", '[{"prompt": "a"}, "b"]', "p.json: [1]: expected a table of prompt settings, got str"),
        ("p.json", '[\n{"prompt": "a",}\n]', "p.json:2: invalid JSON"),
    ],
)
def test_structured_errors_name_file_and_key(tmp_path, name, text, message):
    with pytest.raises(PromptFileError) as raised:
        load_prompts(_write(tmp_path, text, name), DEFAULTS)
    assert str(raised.value).startswith(str(tmp_path / name))
    assert message in str(raised.value)


def test_each_line_is_checked_on_its_own():
    text = "# a comment\n\na dog --w 96\na cat --x 1\na cow --s many\na fox --h 100\na dog --d 1 --d 2\nan owl --n dark\n"
    checked = check_prompt_lines(text, DEFAULTS)
    assert [(line.number, line.problem) for line in checked] == [
        (3, None),
        (4, "unknown option --x; expected one of --n, --w, --h, --s, --l, --d, --ss, --g"),
        (5, "--s must be a whole number, got 'many'"),
        (6, "--h must be a multiple of 8, got 100"),
        (7, "option --d is given twice"),
        (8, None),
    ]
    assert checked[0].prompt == replace(DEFAULTS, prompt="a dog", width=96)
    assert checked[-1].prompt == replace(DEFAULTS, prompt="an owl", negative_prompt="dark")
    assert all(line.prompt is None for line in checked[1:-1])


def _sample(**values) -> SampleSection:
    return SampleSection.model_validate(values)


def test_prompt_text_of_the_sample_section_with_the_runs_defaults():
    sample = _sample(prompt_text="a dog --w 96\n# skipped\na cat --ss k_euler", steps=5, height=72)
    defaults = run_defaults(sample, (64, 128), training_seed=9)
    assert defaults == SamplePrompt(prompt="", width=64, height=72, steps=5, seed=9)
    assert section_prompts(sample, defaults) == [replace(defaults, prompt="a dog", width=96),
                                                 replace(defaults, prompt="a cat", sampler="euler")]
    assert run_defaults(_sample(seed=3, width=80), (64, 64), training_seed=9).seed == 3
    assert section_prompts(_sample(), defaults) == []


@pytest.mark.parametrize(("text", "message"), [
    ("a dog\na cat --w 65", "sample.prompt_text:2: --w must be a multiple of 8, got 65"),
    ("# only a comment\n", "sample.prompt_text: no prompts found (only blank or # comment lines)"),
])
def test_bad_prompt_text_names_the_line(text, message):
    sample = _sample(prompt_text=text)
    with pytest.raises(PromptFileError) as raised:
        section_prompts(sample, run_defaults(sample, (64, 64), training_seed=1))
    assert str(raised.value) == message


def test_prompts_come_from_a_file_or_the_text_not_both(tmp_path):
    with pytest.raises(ValidationError, match="sample.prompt_text or a file in sample.prompts, not both"):
        _sample(prompts=str(_write(tmp_path, "a dog\n")), prompt_text="a cat")
    with pytest.raises(ValidationError, match="needs sample.prompts or sample.prompt_text"):
        _sample(compare_at_end=True)
    assert _sample(compare_at_end=True, prompt_text="a cat").compare_at_end


def test_sizes_are_checked_against_the_families_multiple(tmp_path):
    """FLUX.1 packs 2x2 latents: its previews' sides are multiples of 16 (the run passes its family's multiple)."""
    lines = "a dog --w 72 --h 64\na cat --w 96 --h 80"
    sample = _sample(prompt_text=lines)
    assert [prompt.width for prompt in section_prompts(sample, DEFAULTS)] == [72, 96]   # SD: multiples of 8
    with pytest.raises(PromptFileError, match="sample.prompt_text:1: --w must be a multiple of 16, got 72"):
        section_prompts(sample, DEFAULTS, multiple=16)
    structured = _write(tmp_path, "[[prompt]]\nprompt = 'a dog'\nheight = 200\n", "prompts.toml")
    with pytest.raises(PromptFileError, match=r"prompt\[0\]: height must be a multiple of 16, got 200"):
        load_prompts(structured, DEFAULTS, multiple=16)
    assert [line.problem for line in check_prompt_lines(lines, DEFAULTS, multiple=16)] == [
        "--w must be a multiple of 16, got 72", None]

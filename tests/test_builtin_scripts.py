"""Prompt matrix and Prompts from file or textbox: the pictures they make are the single jobs they describe."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import small
from webui.engine.errors import UserError
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts
from webui.scripts.processing import StableDiffusionProcessingTxt2Img


@pytest.fixture(scope="module")
def runner():
    callbacks.clear()
    return load_scripts(None).txt2img


def run(manager, runner, title, args, outdir=None, **fields):
    p = StableDiffusionProcessingTxt2Img(small(steps=2, seed=31, **fields), manager, outdir)
    return p, runner.run(p, runner.build_args(title, args, None))


def pixels(image):
    return np.asarray(image)


def test_prompt_matrix_makes_every_combination_and_a_labelled_grid(manager, runner, tmp_path):
    p, result = run(manager, runner, "Prompt matrix", [False, False, "positive", "comma", 0], tmp_path,
                    prompt="a cat|red|blue")
    expected = ["a cat", "a cat, red", "a cat, blue", "a cat, red, blue"]
    assert result.all_prompts == expected and result.index_of_first_image == 1
    assert len(result.images) == 5
    for prompt, image in zip(expected, result.images[1:]):
        single = manager.txt2img(small(steps=2, seed=31, prompt=prompt), None)
        assert np.array_equal(pixels(image), pixels(single.images[0])), prompt
    grid = result.images[0]
    assert grid.width > 2 * 64 and grid.height > 2 * 64  # 2×2 cells and the part legends around them
    assert len(list((tmp_path / "txt2img-grids").rglob("*.png"))) == 1
    assert len(list((tmp_path / "txt2img-images").rglob("*.png"))) == 4


def test_prompt_matrix_different_seeds_and_negative_prompt(manager, runner):
    _, result = run(manager, runner, "Prompt matrix", [True, True, "negative", "space", 0],
                    negative_prompt="ugly|dark")
    assert [x.negative_prompt for x in result.params] == ["ugly", "dark ugly"]
    assert [x.seed for x in result.params] == [31, 32]


def test_prompts_from_file_lines_are_single_jobs(manager, runner):
    text = 'a red ball\n\n--prompt "a blue cube" --steps 3 --seed 5 --sampler_name "Euler a" --cfg_scale 4\n'
    _, result = run(manager, runner, "Prompts from file or textbox", [False, False, "start", text], prompt="")
    assert [x.prompt for x in result.params] == ["a red ball", "a blue cube"]
    first = manager.txt2img(small(steps=2, seed=31, prompt="a red ball"), None)
    second = manager.txt2img(small(steps=3, seed=5, prompt="a blue cube", sampler_name="Euler a", cfg_scale=4.0),
                             None)
    assert np.array_equal(pixels(result.images[0]), pixels(first.images[0]))
    assert np.array_equal(pixels(result.images[1]), pixels(second.images[0]))


def test_prompts_from_file_iterates_seeds_and_joins_the_base_prompt(manager, runner):
    _, result = run(manager, runner, "Prompts from file or textbox", [True, False, "end", "red\nblue"],
                    prompt="a cat")
    assert [(x.prompt, x.seed) for x in result.params] == [("a cat red", 31), ("a cat blue", 32)]


@pytest.mark.parametrize("text, message", [
    ("--prompt a --foo 1", "line 1: unknown option: --foo"),
    ("ok\n--steps many", "line 2: bad value for --steps"),
    ("--outpath_samples /tmp --prompt x", "unknown option: --outpath_samples"),
    ("--prompt 'unclosed", "unreadable options"),
    ("\n\n", "the list of prompts is empty"),
])
def test_prompts_from_file_mistakes_name_the_line(manager, runner, text, message):
    with pytest.raises(UserError, match=message):
        run(manager, runner, "Prompts from file or textbox", [False, False, "start", text])

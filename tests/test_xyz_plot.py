"""X/Y/Z plot (built-in script): each cell is the single job with those settings, bit for bit; the grid has
A1111's legends and infotext; costly axes run outermost, so the checkpoint axis loads each model once."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import small
from webui.engine.errors import UserError
from webui.engine.infotext import parse_infotext
from webui.scripts.extensions import load_scripts
from webui.scripts.processing import StableDiffusionProcessingTxt2Img

SAMPLERS = ["Euler", "Euler a", "DDIM"]
CFGS = [3.0, 5.5, 9.0]


@pytest.fixture(scope="module")
def system():
    return load_scripts(None)


def xyz_module(system):
    import sys
    return sys.modules[type(system.txt2img.find("X/Y/Z plot")).__module__]


def xyz_args(runner, x_type, x_values, y_type="Nothing", y_values="", z_type="Nothing", z_values="", **options):
    script = runner.find("X/Y/Z plot")
    args = runner.build_args("X/Y/Z plot", [x_type, x_values, [], y_type, y_values, [], z_type, z_values, []],
                             None)
    names = ["draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x",
             "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode"]
    for name, value in options.items():
        args[script.args_from + 9 + names.index(name)] = value
    return args


def run_script(manager, system, args, outdir=None, **fields):
    runner = system.txt2img
    p = StableDiffusionProcessingTxt2Img(small(steps=3, seed=77, **fields), manager, outdir)
    return runner.run(p, args)


def test_sampler_by_cfg_grid_cells_equal_single_jobs(manager, system, tmp_path):
    args = xyz_args(system.txt2img, "Sampler", ", ".join(SAMPLERS), "CFG Scale", "3, 5.5, 9",
                    include_lone_images=True)
    result = run_script(manager, system, args, tmp_path)
    grid = result.images[0]
    assert len(result.cells) == 9 and all(c is not None for c in result.cells)
    cell_w, cell_h = result.cells[0].size
    assert grid.width > 3 * cell_w and grid.height > 3 * cell_h, "legends above and left of the cells"
    for iy, cfg in enumerate(CFGS):
        for ix, sampler in enumerate(SAMPLERS):
            single = manager.txt2img(small(steps=3, seed=77, sampler_name=sampler, cfg_scale=cfg), None)
            cell = result.cells[ix + iy * 3]
            assert np.array_equal(np.asarray(cell), np.asarray(single.images[0])), (sampler, cfg)
            # the cell sits in the grid where A1111 puts it: bottom-right aligned block of cells
            left = grid.width - 3 * cell_w + ix * cell_w
            top = grid.height - 3 * cell_h + iy * cell_h
            assert np.array_equal(np.asarray(grid.crop((left, top, left + cell_w, top + cell_h))),
                                  np.asarray(single.images[0]))
    info = parse_infotext(result.infotexts[0])
    assert info.extra["Script"] == "X/Y/Z plot"
    assert info.extra["X Type"] == "Sampler" and info.extra["X Values"] == "Euler, Euler a, DDIM"
    assert info.extra["Y Type"] == "CFG Scale" and info.extra["Y Values"] == "3, 5.5, 9"
    assert "Script: X/Y/Z plot, X Type: Sampler, X Values: \"Euler, Euler a, DDIM\"" in result.infotexts[0]
    grids = list((tmp_path / "txt2img-grids").rglob("*.png"))
    assert len(grids) == 1
    from webui.engine.infotext import read_png_infotext
    assert read_png_infotext(grids[0]) == result.infotexts[0]
    assert len(list((tmp_path / "txt2img-images").rglob("*.png"))) == 9
    # sub images follow the grid, in A1111's order (x fastest)
    assert len(result.images) == 10 and np.array_equal(np.asarray(result.images[1]), np.asarray(result.cells[0]))


def test_legend_text_and_labels(system):
    options = {o.label: o for o in xyz_module(system).axis_options(False)}
    assert options["CFG Scale"].label_for(7.5) == "CFG Scale: 7.5"
    assert options["Sampler"].label_for("Euler a") == "Euler a"
    assert options["Steps"].label_for(20) == "Steps: 20"
    assert options["Checkpoint name"].label_for("sub/model.safetensors") == "model.safetensors"
    assert options["Prompt order"].label_for(("a", "b")) == "a, b"


def test_axis_numbers_are_a1111s(system):
    """An API client's axis numbers mean A1111 1.10's axes on each tab."""
    txt = [o.label for o in xyz_module(system).axis_options(False)]
    img = [o.label for o in xyz_module(system).axis_options(True)]
    assert txt[:12] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale",
                        "Prompt S/R", "Prompt order", "Sampler", "Hires sampler", "Checkpoint name"]
    assert img[5:11] == ["CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order", "Sampler",
                         "Checkpoint name"]
    assert txt[-1] == img[-1] == "Size"


def test_numbers_as_axis_types_and_steps_ranges(manager, system):
    args = xyz_args(system.txt2img, 4, "1-3", no_fixed_seeds=False)
    result = run_script(manager, system, args)
    assert [p.steps for p in result.params] == [1, 2, 3]
    for steps, cell in zip([1, 2, 3], result.cells):
        single = manager.txt2img(small(steps=steps, seed=77), None)
        assert np.array_equal(np.asarray(cell), np.asarray(single.images[0]))


def test_checkpoint_axis_loads_each_model_once(manager, system, monkeypatch, data_dir, tiny_files):
    import shutil
    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    builds = []
    original = type(manager)._build

    def counting(self, info):
        builds.append(info.name)
        return original(self, info)
    monkeypatch.setattr(type(manager), "_build", counting)
    manager.unload()
    args = xyz_args(system.txt2img, "Seed", "1, 2, 3", "Checkpoint name", "tiny, other")
    result = run_script(manager, system, args)
    assert len(result.cells) == 6
    assert sorted(builds) == ["other.safetensors", "tiny.safetensors"], builds
    models = [p.model for p in result.params]
    assert models.count("tiny") == 3 and models.count("other") == 3


@pytest.mark.parametrize("x_type, values, message", [
    ("Sampler", "Euler, Nope", "Unknown sampler: Nope"),
    ("Steps", "1, abc", "'abc' is not a whole number"),
    ("Face restore", "True", "'Face restore' axis is not supported"),
    ("No such axis", "1", "unknown axis type 'No such axis'"),
    ("Prompt S/R", "dog, cat", "Prompt S/R did not find dog"),
    ("Checkpoint name", "tiny, missing-model", "missing-model"),
])
def test_bad_axis_values_are_clear_errors(manager, system, x_type, values, message):
    args = xyz_args(system.txt2img, x_type, values)
    with pytest.raises(UserError, match=message):
        run_script(manager, system, args)


def test_prompt_sr_and_order(manager, system):
    args = xyz_args(system.txt2img, "Prompt S/R", "cat, dog, bird")
    result = run_script(manager, system, args, prompt="a cat")
    assert [p.prompt for p in result.params] == ["a cat", "a dog", "a bird"]
    args = xyz_args(system.txt2img, "Prompt order", "red, cat")
    result = run_script(manager, system, args, prompt="red and cat")
    assert [p.prompt for p in result.params] == ["red and cat", "cat and red"]

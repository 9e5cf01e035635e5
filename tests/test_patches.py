"""Per-job model patches (engine/patches.py): they compose, they reach only their own job, and the model is
exactly as loaded afterwards, even when a patch fails."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import small
from webui.engine.manager import JobOptions
from webui.engine.patches import JobPatches

PARAMS = small(steps=3, sampler_name="Euler", seed=11)


def pixels(processed):
    return np.asarray(processed.images[0])


def run(manager, patches=None, params=PARAMS):
    return pixels(manager.txt2img(params, None, task=JobOptions(patches=patches)))


def scaled_attention(factor, calls, kind):
    def patch(call, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        calls.append(kind)
        return call(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs) * factor
    return patch


def test_two_attention_patches_compose_and_leave_the_model_clean(manager):
    plain = run(manager)
    a, b = [], []
    first = JobPatches()
    first.replace_attention(scaled_attention(1.8, a, "a"), kind="cross")
    only_a = run(manager, first)
    second = JobPatches()
    second.replace_attention(scaled_attention(0.5, b, "b"), kind="self")
    only_b = run(manager, second)
    both = JobPatches().extend(first).extend(second)
    a.clear(), b.clear()
    together = run(manager, both)
    assert a and b, "both extensions' attention patches ran"
    assert not np.array_equal(only_a, plain) and not np.array_equal(only_b, plain)
    assert not np.array_equal(together, only_a) and not np.array_equal(together, only_b)
    assert np.array_equal(run(manager), plain), "after the patched jobs the model draws as before, bit for bit"


def test_weight_patch_is_undone_after_the_job_and_a_bad_one_changes_nothing(manager):
    plain = run(manager)
    unet = manager.ensure_model(None).components.unet
    name = "conv_in.bias"
    before = unet.get_parameter(name).detach().clone()
    patches = JobPatches()
    patches.add_weights(name, before.new_ones(before.shape), strength=0.5)
    assert not np.array_equal(run(manager, patches), plain)
    assert np.array_equal(unet.get_parameter(name).detach(), before)
    bad = JobPatches()
    bad.add_weights(name, before.new_ones(before.shape))
    bad.add_weights("conv_in.weight", before.new_ones(3))
    with pytest.raises(ValueError, match="conv_in.weight.*does not match"):
        run(manager, bad)
    assert np.array_equal(unet.get_parameter(name).detach(), before)
    assert np.array_equal(run(manager), plain)


def test_a_patch_that_fails_mid_job_leaves_the_next_job_clean(manager):
    plain = run(manager)

    def broken(name, output):
        raise RuntimeError("extension bug")
    patches = JobPatches()
    patches.replace_attention(scaled_attention(3.0, [], "x"))
    patches.block_output(broken, "mid_block")
    with pytest.raises(RuntimeError, match="extension bug"):
        run(manager, patches)
    assert np.array_equal(run(manager), plain)


def test_block_output_patch_changes_the_picture_and_unknown_blocks_are_named(manager):
    plain = run(manager)
    seen = []

    def damp(name, output):
        seen.append(name)
        return output * 0.5
    patches = JobPatches()
    patches.block_output(damp, "mid_block")
    assert not np.array_equal(run(manager, patches), plain)
    assert set(seen) == {"mid_block"}
    wrong = JobPatches()
    wrong.block_output(damp, "middle_block")
    with pytest.raises(ValueError, match="no UNet block named 'middle_block'"):
        run(manager, wrong)


def test_cfg_function_replacement_equals_cfg_scale_zero(manager):
    """A CFG function returning the negative prompt's prediction is guidance at scale 0: same pixels."""
    patches = JobPatches()
    patches.replace_cfg(lambda combine, args: args.uncond_out)
    assert np.array_equal(run(manager, patches), run(manager, params=PARAMS.replace(cfg_scale=0.0)))


def test_cfg_hooks_see_every_model_call_and_can_change_the_result(manager):
    plain = run(manager)
    steps = []
    patches = JobPatches()
    patches.before_model.append(lambda state: steps.append((state.step, state.total_steps, len(state.conds))))
    patches.after_model.append(lambda state: None)
    assert np.array_equal(run(manager, patches), plain), "hooks that change nothing change no pixel"
    assert steps == [(0, 3, 1), (1, 3, 1), (2, 3, 1)]

    def halve(state):
        state.x = state.x * 0.5
    changed = JobPatches()
    changed.after_cfg.append(halve)
    assert not np.array_equal(run(manager, changed), plain)


def test_model_wrapper_wraps_every_unet_batch(manager):
    plain = run(manager)
    shapes = []

    def wrapper(apply, x, sigma, context, added, concat):
        shapes.append(tuple(x.shape))
        return apply(x, sigma, context, added, concat)
    patches = JobPatches()
    patches.wrap_model(wrapper)
    assert np.array_equal(run(manager, patches), plain)
    assert len(shapes) == 3 and shapes[0][0] == 2  # the prompt and the negative prompt in one batch

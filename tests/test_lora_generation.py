"""LoRAs through the manager: prompt tags → merged weights → images and infotext, and back."""
import hashlib
import struct
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import small
from webui.engine.infotext import parse_infotext
from webui.engine.lora import LoraError, build_key_map, named_modules
from webui.engine.lora.activation import lora_requests, parse_lora_hashes
from webui.engine.prompts.parser import extract_extra_networks

RANK = 4


def _components(model):
    c = model.components
    return {"unet": c.unet, "text_encoder": c.text_encoder, "text_encoder_2": c.text_encoder_2}


def kohya_lora(model, seed=0, text=True, unet=True, strength=0.5):
    """A rank-4 kohya LoRA on every Linear of the loaded model (text encoder and/or UNet)."""
    comps = _components(model)
    mods = named_modules(comps)
    keys = {target: key for key, target in build_key_map(comps).items()
            if key.startswith(("lora_unet_down", "lora_unet_mid", "lora_unet_up", "lora_te_text_model"))}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for target, key in keys.items():
        module = mods[target]
        if not isinstance(module, torch.nn.Linear) or (target.startswith("text") and not text) or \
                (target.startswith("unet") and not unet):
            continue
        out, inp = module.weight.shape
        sd[key + ".lora_down.weight"] = torch.randn(RANK, inp, generator=g) * strength
        sd[key + ".lora_up.weight"] = torch.randn(out, RANK, generator=g) * strength
        sd[key + ".alpha"] = torch.tensor(float(RANK))
    return sd


def write(folder, name, sd, metadata=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def body_sha256(path):
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return hashlib.sha256(raw[8 + size:]).hexdigest()


def pixels(processed):
    return np.asarray(processed.images[0])


def weights(model):
    return {k: v.detach().clone() for k, v in model.components.unet.state_dict().items()} | \
        {"te." + k: v.detach().clone() for k, v in model.components.text_encoder.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture
def lora_dir(data_dir):
    return data_dir / "models" / "Lora"


@pytest.fixture
def style(manager, lora_dir):
    return write(lora_dir, "style", kohya_lora(manager.current, seed=1))


def test_weight_zero_is_baseline_and_removal_restores(manager, style, tmp_path):
    before = weights(manager.current)
    base = pixels(manager.txt2img(small(), None))
    assert np.array_equal(pixels(manager.txt2img(small(prompt="a cat <lora:style:0>"), None)), base)
    with_lora = manager.txt2img(small(prompt="a cat <lora:style:1>"), None)
    assert not np.array_equal(pixels(with_lora), base)
    # the next request without the tag: bit-identical weights and the baseline image
    again = manager.txt2img(small(), None)
    assert np.array_equal(pixels(again), base)
    assert_same_weights(weights(manager.current), before)
    assert "Lora hashes" not in again.infotexts[0]


def test_infotext_lora_hashes_written_and_parsed(manager, style):
    processed = manager.txt2img(small(prompt="a cat <lora:style:0.8>"), None)
    short = body_sha256(style)[:12]
    text = processed.infotexts[0]
    assert f'Lora hashes: "style: {short}"' in text
    assert text.splitlines()[0] == "a cat <lora:style:0.8>"  # the tag stays in the prompt, as A1111
    parsed = parse_infotext(text)
    assert parse_lora_hashes(parsed.extra["Lora hashes"]) == {"style": short}
    # regenerating from the pasted infotext gives the same image
    assert np.array_equal(pixels(manager.txt2img(parsed.replace(model=None), None)), pixels(processed))


def test_metadata_hash_and_alias(manager, lora_dir):
    sd = kohya_lora(manager.current, seed=2)
    write(lora_dir / "sub", "file_name", sd, {"ss_output_name": "pretty", "sshs_model_hash": "ab" * 32})
    by_alias = manager.txt2img(small(prompt="<lora:pretty:1>"), None)
    assert 'Lora hashes: "pretty: abababababab"' in by_alias.infotexts[0]
    by_name = manager.txt2img(small(prompt="<lora:file_name:1>"), None)
    by_path = manager.txt2img(small(prompt="<lora:sub/file_name:1>"), None)
    assert np.array_equal(pixels(by_alias), pixels(by_name))
    assert np.array_equal(pixels(by_alias), pixels(by_path))


def test_text_encoder_only_lora_changes_cached_conditioning(manager, lora_dir):
    write(lora_dir, "te_only", kohya_lora(manager.current, seed=3, unet=False, strength=1.0))
    base = pixels(manager.txt2img(small(), None))  # fills the conditioning cache for "a cat"
    changed = pixels(manager.txt2img(small(prompt="a cat <lora:te_only:1>"), None))
    assert not np.array_equal(changed, base)
    assert np.array_equal(pixels(manager.txt2img(small(), None)), base)
    # unet=0 on a text-encoder-only LoRA still changes the image; te=0 does not
    assert not np.array_equal(pixels(manager.txt2img(small(prompt="a cat <lora:te_only:1:0>"), None)), base)
    assert np.array_equal(pixels(manager.txt2img(small(prompt="a cat <lora:te_only:0:1>"), None)), base)


def test_two_loras_compose_additively(manager, lora_dir):
    write(lora_dir, "a", kohya_lora(manager.current, seed=4))
    write(lora_dir, "b", kohya_lora(manager.current, seed=5))
    base = weights(manager.current)
    deltas = {}
    for name in ("a", "b"):
        manager.txt2img(small(steps=1, prompt=f"<lora:{name}:1>"), None)
        deltas[name] = {k: v.double() - base[k].double() for k, v in weights(manager.current).items()}
    manager.txt2img(small(steps=1, prompt="<lora:a:1> <lora:b:0.5>"), None)
    both = weights(manager.current)
    changed = 0
    for k in base:
        expected = base[k].double() + deltas["a"][k] + 0.5 * deltas["b"][k]
        torch.testing.assert_close(both[k].double(), expected, rtol=0, atol=1e-5)
        changed += not torch.equal(both[k], base[k])
    assert changed > 10


def test_same_set_again_does_not_touch_weights(manager, style):
    manager.txt2img(small(steps=1, prompt="<lora:style:1>"), None)
    patcher = manager.current.loras.patcher
    calls = []
    original = patcher._merge
    patcher._merge = lambda *a: calls.append(a) or original(*a)
    manager.txt2img(small(steps=1, prompt="another prompt <lora:style:1>"), None)
    assert calls == []
    manager.txt2img(small(steps=1, prompt="<lora:style:0.5>"), None)
    assert calls


def test_missing_wrong_and_corrupt_files_error_and_keep_model(manager, style, lora_dir):
    manager.txt2img(small(steps=1, prompt="<lora:style:1>"), None)
    merged = weights(manager.current)
    xl = {f"lora_te2_text_model_encoder_layers_{i}_self_attn_q_proj.lora_up.weight": torch.zeros(64, 2)
          for i in range(7)}
    write(lora_dir, "xl_only", xl)
    with pytest.raises(LoraError, match=r"none of its 7 keys matched.*e\.g\. lora_te2_"):
        manager.txt2img(small(prompt="<lora:style:1> <lora:xl_only:1>"), None)
    (lora_dir / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(LoraError, match="cannot read LoRA file broken.safetensors"):
        manager.txt2img(small(prompt="<lora:broken>"), None)
    with pytest.raises(LoraError, match="'x' is not a number"):
        manager.txt2img(small(prompt="<lora:style:x>"), None)
    for weight in ("nan", "inf", "-1e999"):  # a non-finite multiplier would turn every picture black
        with pytest.raises(LoraError, match=f"'{weight}' is not a finite number"):
            manager.txt2img(small(prompt=f"<lora:style:{weight}>"), None)
    # nothing was half-applied: the model still carries exactly the last good set
    assert_same_weights(weights(manager.current), merged)
    assert manager.txt2img(small(steps=1, prompt="<lora:style:1>"), None).images


def test_missing_lora_generates_without_it_and_warns(manager, style):
    base = pixels(manager.txt2img(small(), None))
    out = manager.txt2img(small(prompt="a cat <lora:nope:1>"), None)
    assert np.array_equal(pixels(out), base)
    assert len(out.warnings) == 1 and out.warnings[0].startswith("LoRA not found: 'nope'")
    assert "1 LoRA files there): generated without it" in out.warnings[0]
    assert "Lora hashes" not in out.infotexts[0]
    both = manager.txt2img(small(prompt="a cat <lora:nope:1> <lora:style:1>"), None)
    assert 'Lora hashes: "style: ' in both.infotexts[0]


def test_partly_matching_file_warns_with_examples(manager, lora_dir):
    sd = kohya_lora(manager.current, seed=6)
    sd["lora_unet_no_such_block.lora_up.weight"] = torch.zeros(4, 4)
    write(lora_dir, "partial", sd)
    processed = manager.txt2img(small(steps=1, prompt="<lora:partial:1>"), None)
    assert processed.warnings == ["LoRA partial: 1 key matched nothing in this model and was skipped, "
                                  "e.g. lora_unet_no_such_block.lora_up.weight"]


def test_lora_in_one_request_never_affects_a_concurrent_one(manager, style):
    base = pixels(manager.txt2img(small(), None))
    styled = pixels(manager.txt2img(small(prompt="a cat <lora:style:1>"), None))
    results = {}

    def run(name, prompt):
        results[name] = [pixels(manager.txt2img(small(prompt=prompt), None)) for _ in range(2)]

    threads = [threading.Thread(target=run, args=("plain", "a cat")),
               threading.Thread(target=run, args=("lora", "a cat <lora:style:1>"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(img, base) for img in results["plain"])
    assert all(np.array_equal(img, styled) for img in results["lora"])


def test_checkpoint_switch_keeps_each_models_loras_apart(manager, style, data_dir, tiny_files):
    import shutil

    shutil.copy(tiny_files["other"], data_dir / "models" / "Stable-diffusion" / "other.safetensors")
    manager.settings.sd_checkpoints_limit = 2  # both stay in RAM, each with its own merged set
    base = pixels(manager.txt2img(small(), None))
    styled = pixels(manager.txt2img(small(prompt="a cat <lora:style:1>"), None))
    other_base = pixels(manager.txt2img(small(model="other"), None))
    assert np.array_equal(pixels(manager.txt2img(small(model="tiny", prompt="a cat <lora:style:1>"), None)),
                          styled)  # still merged: nothing was redone
    other_styled = pixels(manager.txt2img(small(model="other", prompt="a cat <lora:style:1>"), None))
    assert not np.array_equal(other_styled, other_base)
    assert np.array_equal(pixels(manager.txt2img(small(model="tiny"), None)), base)
    assert np.array_equal(pixels(manager.txt2img(small(model="other"), None)), other_base)


def test_parsed_cache_limit(manager, style, lora_dir):
    write(lora_dir, "second", kohya_lora(manager.current, seed=7))
    manager.settings.lora_in_memory_limit = 1
    manager.txt2img(small(steps=1, prompt="<lora:style:1> <lora:second:1>"), None)
    assert len(manager.current.loras._parsed) == 1
    manager.settings.lora_in_memory_limit = 0
    manager.txt2img(small(steps=1, prompt="<lora:style:1>"), None)
    assert len(manager.current.loras._parsed) == 0


def test_changed_file_is_reread(manager, lora_dir):
    path = write(lora_dir, "evolving", kohya_lora(manager.current, seed=8))
    first = pixels(manager.txt2img(small(prompt="a cat <lora:evolving:1>"), None))
    import os
    write(lora_dir, "evolving", kohya_lora(manager.current, seed=9))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    manager.loras.refresh()
    assert not np.array_equal(pixels(manager.txt2img(small(prompt="a cat <lora:evolving:1>"), None)), first)


def test_lowvram_offload_patches_the_offloaded_weights(data_dir, manager, style):
    from webui.engine.manager import PipelineManager

    styled = pixels(manager.txt2img(small(prompt="a cat <lora:style:1>"), None))
    base = pixels(manager.txt2img(small(), None))
    low = PipelineManager(data_dir / "models" / "Stable-diffusion", data_dir, device="cpu", offload="lowvram")
    assert np.array_equal(pixels(low.txt2img(small(prompt="a cat <lora:style:1>"), None)), styled)
    assert np.array_equal(pixels(low.txt2img(small(), None)), base)


@pytest.mark.parametrize("tag, expected", [
    ("<lora:a>", [("a", 1.0, 1.0)]),
    ("<lora:a:0.5>", [("a", 0.5, 0.5)]),
    ("<lora:a:0.5:0.25>", [("a", 0.5, 0.25)]),
    ("<lora:a:unet=0.3>", [("a", 1.0, 0.3)]),
    ("<lora:a:te=0.2:unet=-1>", [("a", 0.2, -1.0)]),
    ("<lora:a:0.7:0.7:8>", [("a", 0.7, 0.7)]),            # dyn accepted
    ("<lora:a:1> <hypernet:h:1> <lyco:b:-0.5>", [("a", 1.0, 1.0), ("b", -0.5, -0.5)]),
])
def test_tag_forms(tag, expected):
    got = lora_requests(extract_extra_networks(tag)[1])
    assert [(r.name, r.te, r.unet) for r in got] == expected


def test_sdxl_kohya_lora_end_to_end(data_dir, lora_dir):
    """An SDXL kohya file (LDM-style UNet names, lora_te1_/lora_te2_) changes the image and comes off exactly;
    an SD1 LoRA on it is refused with the model untouched."""
    from webui.engine.manager import PipelineManager
    from webui.engine.models.tiny import make_tiny_checkpoint

    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    make_tiny_checkpoint(ckpt_dir / "xl.safetensors", seed=3, family="sdxl")
    m = PipelineManager(ckpt_dir, data_dir, device="cpu")
    m.load("xl")
    comps = _components(m.current)
    mods = named_modules(comps)
    g = torch.Generator().manual_seed(11)
    sd = {}
    for key, target in build_key_map(comps).items():
        if not key.startswith(("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks",
                               "lora_te1_text_model", "lora_te2_text_model")):
            continue
        module = mods[target]
        if isinstance(module, torch.nn.Linear):
            out, inp = module.weight.shape
            sd[key + ".lora_down.weight"] = torch.randn(RANK, inp, generator=g)
            sd[key + ".lora_up.weight"] = torch.randn(out, RANK, generator=g)
    assert any(k.startswith("lora_te2_") for k in sd) and any(k.startswith("lora_unet_middle") for k in sd)
    write(lora_dir, "xl_style", sd)
    before = {k: v.clone() for k, v in m.current.components.text_encoder_2.state_dict().items()}
    base = pixels(m.txt2img(small(model="xl"), None))
    styled = m.txt2img(small(model="xl", prompt="a cat <lora:xl_style:0.5>"), None)
    assert not np.array_equal(pixels(styled), base)
    assert "Lora hashes" in styled.infotexts[0]
    assert np.array_equal(pixels(m.txt2img(small(model="xl"), None)), base)
    after = m.current.components.text_encoder_2.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    write(lora_dir, "sd1", {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.ones(32, 2),
                            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.ones(2, 32)})
    with pytest.raises(LoraError, match="none of its 2 keys matched"):
        m.txt2img(small(model="xl", prompt="<lora:sd1:1>"), None)
    assert np.array_equal(pixels(m.txt2img(small(model="xl"), None)), base)


def test_a_lora_with_nan_weights_is_refused_and_the_model_kept(manager, lora_dir):
    from webui.engine.lora.formats import LoraError

    sd = kohya_lora(manager.current, seed=6)
    first = next(k for k in sd if k.endswith("lora_up.weight"))
    sd[first] = torch.full_like(sd[first], float("nan"))
    write(lora_dir, "nan", sd)
    before, base = weights(manager.current), pixels(manager.txt2img(small(), None))
    with pytest.raises(LoraError, match=f"nan.safetensors is broken: {first} contains NaN"):
        manager.txt2img(small(prompt="a cat <lora:nan:1>"), None)
    assert_same_weights(weights(manager.current), before)
    assert np.array_equal(pixels(manager.txt2img(small(), None)), base)


def test_a_pickle_lora_that_would_run_code_is_refused_in_one_plain_sentence(manager, lora_dir, tmp_path):
    import os

    from webui.engine.lora.formats import LoraError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    lora_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"lora_unet_x.lora_up.weight": Payload()}, lora_dir / "evil.pt")
    with pytest.raises(LoraError) as error:
        manager.txt2img(small(prompt="a cat <lora:evil:1>"), None)
    message = str(error.value)
    assert message.startswith("refused to load LoRA file evil.pt: it contains Python objects")
    assert "weights_only" not in message and "\x1b" not in message
    assert not marker.exists()

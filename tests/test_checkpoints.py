import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import small
from webui.engine.models.checkpoints import CheckpointError, HashCache, read_state_dict, resolve_checkpoint
from webui.engine.manager import NoCheckpoint, PipelineManager


def image_array(manager, **kw):
    return np.asarray(manager.txt2img(small(**kw), None).images[0])


class WritesAFile:
    """A pickle payload that creates a file when unpickled (what a malicious .ckpt does)."""
    target = None

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_ckpt_with_code_is_refused_and_runs_nothing(tmp_path, manager):
    marker = tmp_path / "pwned.txt"
    WritesAFile.target = marker
    evil = manager.ckpt_dir / "evil.ckpt"
    with open(evil, "wb") as f:
        torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": WritesAFile()}, f)
    with pytest.raises(CheckpointError, match="refused to load evil.ckpt: it contains Python objects"):
        manager.load("evil")
    assert not marker.exists()
    assert manager.current.info.name == "tiny.safetensors"


def test_truncated_safetensors_is_a_clear_error_and_previous_model_still_works(manager):
    before = image_array(manager, seed=3)
    good = (manager.ckpt_dir / "tiny.safetensors").read_bytes()
    (manager.ckpt_dir / "broken.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read broken.safetensors: not a valid .safetensors file"):
        manager.load("broken.safetensors")
    assert manager.current.info.name == "tiny.safetensors"
    assert np.array_equal(image_array(manager, seed=3), before)


def test_not_a_stable_diffusion_file_is_a_clear_error(manager):
    save_file({"some.weight": torch.zeros(3)}, str(manager.ckpt_dir / "lora.safetensors"))
    with pytest.raises(ValueError, match="not a Stable Diffusion"):
        manager.load("lora")
    assert manager.current.info.name == "tiny.safetensors"


def test_ckpt_and_safetensors_of_the_same_weights_give_the_same_image(manager, tiny_files):
    shutil.copy(tiny_files["ckpt"], manager.ckpt_dir / "tiny-copy.ckpt")
    reference = image_array(manager, seed=9)
    manager.load("tiny-copy.ckpt")
    assert np.array_equal(image_array(manager, seed=9), reference)


def test_wrapper_and_extra_keys_are_ignored(manager, tiny_files):
    state_dict = load_file(str(tiny_files["safetensors"]))
    state_dict["model_ema.decay"] = torch.tensor(0.999)
    state_dict["alphas_cumprod"] = torch.ones(1000)
    state_dict["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None].float()
    torch.save({"state_dict": state_dict, "global_step": 1}, manager.ckpt_dir / "wrapped.ckpt")
    reference = image_array(manager, seed=4)
    manager.load("wrapped")
    assert np.array_equal(image_array(manager, seed=4), reference)


def test_switching_checkpoints_changes_the_image_and_back(manager, tiny_files):
    shutil.copy(tiny_files["other"], manager.ckpt_dir / "other.safetensors")
    first = image_array(manager, seed=2)
    manager.load("other")
    assert not np.array_equal(image_array(manager, seed=2), first)
    assert np.array_equal(image_array(manager, seed=2, model="tiny"), first)
    assert manager.current.info.name == "tiny.safetensors"


def test_model_hash_is_a1111s_and_cached_by_mtime(manager, tmp_path):
    path = manager.ckpt_dir / "tiny.safetensors"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert manager.current.short_hash == sha[:10]
    cache = HashCache(tmp_path / "cache.json")
    assert cache.sha256(path) == sha
    assert HashCache(tmp_path / "cache.json").cached(path) == sha  # persisted on disk
    os.utime(path, (1, 1))
    assert HashCache(tmp_path / "cache.json").cached(path) is None  # a touched file is hashed again


def test_resolve_by_name_stem_title_hash_and_path(manager):
    ckpt_dir = manager.ckpt_dir
    sub = ckpt_dir / "sub"
    sub.mkdir()
    shutil.copy(ckpt_dir / "tiny.safetensors", sub / "nested.safetensors")
    sha = manager.hashes.sha256(sub / "nested.safetensors")
    for query in ("sub/nested.safetensors", "nested", "sub_nested", f"sub/nested.safetensors [{sha[:10]}]",
                  str(sub / "nested.safetensors")):
        assert resolve_checkpoint(query, ckpt_dir).name == "sub/nested.safetensors", query
    assert resolve_checkpoint(sha[:10], ckpt_dir, manager.hashes).path.name in ("tiny.safetensors",
                                                                                  "nested.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found: 'missing'.*tiny.safetensors"):
        resolve_checkpoint("missing", ckpt_dir)


def test_read_state_dict_rejects_other_suffixes(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="expected .safetensors or .ckpt"):
        read_state_dict(tmp_path / "model.bin")


def test_no_checkpoint_message_says_where_to_put_one(tmp_path):
    empty = PipelineManager(tmp_path / "models" / "Stable-diffusion", tmp_path, device="cpu")
    with pytest.raises(NoCheckpoint, match="put a .safetensors or .ckpt"):
        empty.txt2img(small(), None)

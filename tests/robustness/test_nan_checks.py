"""NaN and infinity: weights that carry them are refused by name (a VAE file, a checkpoint's VAE), and a job
whose latent turns non-finite stops with a message instead of saving a black picture."""
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import small
from webui.engine.models.checkpoints import CheckpointError
from webui.engine.models.vae import VAEError
from webui.engine.samplers.sampling import NaNInLatent


def pixels(manager, **kw):
    return np.asarray(manager.txt2img(small(steps=2, **kw), None).images[0])


def tiny_vae(tiny_files) -> dict:
    """The tiny checkpoint's own VAE, as a standalone LDM-layout file holds it."""
    state_dict = load_file(str(tiny_files["safetensors"]))
    return {k[len("first_stage_model."):]: v for k, v in state_dict.items() if k.startswith("first_stage_model.")}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_vae_file_with_nan_is_refused_by_name_and_the_vae_in_use_stays(manager, tiny_files, bad):
    vae = tiny_vae(tiny_files)
    vae["decoder.conv_out.weight"] = vae["decoder.conv_out.weight"].clone()
    vae["decoder.conv_out.weight"][0, 0, 0, 0] = bad
    manager.vae_dir.mkdir(parents=True, exist_ok=True)
    save_file(vae, str(manager.vae_dir / "broken.safetensors"))
    before = pixels(manager)
    with pytest.raises(VAEError, match=r"VAE broken\.safetensors is broken: decoder\.conv_out\.weight contains NaN"):
        manager.txt2img(small(steps=2, vae="broken.safetensors"), None)
    assert manager.current.vae_info is None and manager.current.components.vae is manager.current.baked_vae
    assert np.array_equal(pixels(manager), before)


def test_a_checkpoint_whose_vae_has_nan_is_refused_and_the_loaded_model_kept(manager, tiny_files):
    state_dict = load_file(str(tiny_files["safetensors"]))
    key = "first_stage_model.decoder.conv_in.weight"
    state_dict[key] = torch.full_like(state_dict[key], float("nan"))
    save_file(state_dict, str(manager.ckpt_dir / "nanvae.safetensors"))
    before = pixels(manager)
    with pytest.raises(CheckpointError, match=f"nanvae.safetensors is broken: its VAE tensor {key} contains NaN"):
        manager.load("nanvae")
    assert manager.current.info.name == "tiny.safetensors"
    assert np.array_equal(pixels(manager), before)


def nan_after(monkeypatch, manager, call: int):
    """The UNet answers NaN from its `call`-th evaluation on (as an fp16 overflow does)."""
    unet = manager.current.components.unet
    real, calls = unet.forward, []

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        return (torch.full_like(out[0], float("nan")),) if len(calls) >= call else out
    monkeypatch.setattr(unet, "forward", forward)


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_a_latent_that_turns_nan_stops_the_job_and_saves_nothing(manager, monkeypatch, tmp_path, sampler):
    nan_after(monkeypatch, manager, call=3)
    with pytest.raises(NaNInLatent) as error:
        manager.txt2img(small(steps=6, sampler_name=sampler), tmp_path / "out")
    message = str(error.value)
    assert message.startswith("NaN in the latent at step 3 of 6: ")
    assert "--no-half" in message and "--disable-nan-check" in message
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN → uint8
def test_with_the_check_disabled_the_job_completes(manager, monkeypatch, tmp_path):
    nan_after(monkeypatch, manager, call=3)
    manager.nan_check = False
    processed = manager.txt2img(small(steps=4, sampler_name="Euler"), tmp_path / "out")
    assert len(processed.paths) == 1 and processed.paths[0].is_file()


def test_disable_nan_check_flag_reaches_the_manager(tmp_path):
    from webui import cli

    base = ["--data-dir", str(tmp_path), "--prompt", "x", "--device", "cpu"]
    assert cli._manager(cli.txt2img_parser().parse_args(base)).nan_check is True
    assert cli._manager(cli.txt2img_parser().parse_args([*base, "--disable-nan-check"])).nan_check is False
    assert cli.launch_parser().parse_args(["--disable-nan-check"]).disable_nan_check


def test_cli_nan_latent_is_one_error_line(tmp_path, tiny_files, capsys, monkeypatch):
    from webui import cli
    from webui.engine import manager as manager_module

    real_build = manager_module.PipelineManager._build

    def build(self, info):  # every evaluation of the freshly loaded UNet answers NaN
        loaded = real_build(self, info)
        unet = loaded.components.unet
        monkeypatch.setattr(unet, "forward", lambda *a, **k: (torch.full((1,), float("nan")).expand(
            a[0].shape),))
        return loaded
    monkeypatch.setattr(manager_module.PipelineManager, "_build", build)
    shutil.copy(tiny_files["safetensors"], tmp_path / "tiny.safetensors")
    code = cli.main(["txt2img", "--ckpt", str(tmp_path / "tiny.safetensors"), "--prompt", "x", "--steps", "2",
                     "--width", "64", "--height", "64", "--device", "cpu", "--data-dir", str(tmp_path),
                     "--outdir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: NaN in the latent at step 1 of 2") and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").rglob("*.png")]


def test_the_gpu_check_names_the_same_step_without_a_sync_per_step():
    """Deferred mode (used on CUDA): steps only record the first bad one on the device; after the last step the
    job stops with the same message the immediate check gives."""
    from webui.engine.samplers.sampling import NaNCheck

    latents = [torch.zeros(1, 4, 2, 2)] * 2 + [torch.full((1, 4, 2, 2), float("nan"))] * 4
    immediate, deferred = NaNCheck(6), NaNCheck(6, deferred=True)
    with pytest.raises(NaNInLatent) as want:
        for i, x in enumerate(latents):
            immediate({"i": i, "denoised": x})
    for i, x in enumerate(latents):
        deferred({"i": i, "denoised": x})  # records, never raises here
    with pytest.raises(NaNInLatent) as got:
        deferred.check_result(torch.zeros(1))
    assert str(got.value) == str(want.value) and str(got.value).startswith("NaN in the latent at step 3 of 6")
    clean = NaNCheck(6, deferred=True)
    for i in range(6):
        clean({"i": i, "denoised": torch.zeros(1)})
    assert clean.check_result(torch.zeros(1)) is not None

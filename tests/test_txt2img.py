import datetime

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small
from webui.engine.infotext import VERSION, format_infotext, parse_infotext, read_png_infotext
from webui.engine.params import InvalidParams
from webui.engine.rng import ImageRNG


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(image) if not isinstance(image, Image.Image) else image).astype(np.int16)


def test_png_is_saved_under_date_folder_with_parsable_infotext(manager, tmp_path):
    request = small(seed=77)
    processed = manager.txt2img(request, tmp_path / "out")
    [path] = processed.paths
    assert path == tmp_path / "out" / "txt2img-images" / datetime.date.today().isoformat() / "00000-77.png"
    text = read_png_infotext(path)
    assert text == processed.infotexts[0]
    assert text == ("a cat\nNegative prompt: ugly\nSteps: 6, Sampler: DPM++ 2M, Schedule type: Karras, "
                    f"CFG scale: 7, Seed: 77, Size: 64x64, Model hash: {manager.current.short_hash}, Model: tiny, "
                    f"RNG: CPU, Version: {VERSION}")
    parsed = parse_infotext(text)
    assert parsed.replace(extra={}) == processed.params[0]
    assert parsed.extra == {"Version": VERSION}
    assert (parsed.prompt, parsed.steps, parsed.seed, parsed.width, parsed.model) == ("a cat", 6, 77, 64, "tiny")
    assert format_infotext(parsed) == text
    assert Image.open(path).size == (64, 64)


def test_same_seed_same_pixels_different_seed_different(manager):
    a = manager.txt2img(small(seed=5), None).images[0]
    b = manager.txt2img(small(seed=5), None).images[0]
    c = manager.txt2img(small(seed=6), None).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).max() > 10
    assert pixels(a).std() > 1, "the tiny model must draw something, not a flat image"


@pytest.mark.parametrize("sampler", ["Euler a", "Euler"])
def test_batch_equals_single_runs(manager, sampler):
    batch = manager.txt2img(small(seed=100, batch_size=2, sampler_name=sampler), None)
    assert [p.seed for p in batch.params] == [100, 101]
    for seed, image in zip((100, 101), batch.images):
        single = manager.txt2img(small(seed=seed, sampler_name=sampler), None).images[0]
        # The noise is bit-identical (test_noise_is_per_image); batched UNet matmuls may round differently
        # (as in A1111 #10847), which moves a few pixels by at most one level.
        diff = np.abs(pixels(image) - pixels(single))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_noise_is_per_image_whatever_the_batch():
    batch = ImageRNG((4, 8, 8), [100, 101])
    singles = [ImageRNG((4, 8, 8), [100]), ImageRNG((4, 8, 8), [101])]
    for _ in range(3):  # the initial noise, then two steps of ancestral noise
        drawn = batch.next()
        assert torch.equal(drawn[0], singles[0].next()[0]) and torch.equal(drawn[1], singles[1].next()[0])
    assert torch.equal(ImageRNG((4, 8, 8), [7]).next()[0], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(7)))


def test_batch_count_and_size_give_consecutive_seeds_and_files(manager, tmp_path):
    processed = manager.txt2img(small(seed=10, batch_size=2, n_iter=2), tmp_path)
    assert [p.seed for p in processed.params] == [10, 11, 12, 13]
    assert [p.name for p in processed.paths] == ["00000-10.png", "00001-11.png", "00002-12.png", "00003-13.png"]


def test_random_seed_is_recorded(manager):
    processed = manager.txt2img(small(seed=-1, batch_size=2), None)
    first, second = (p.seed for p in processed.params)
    assert first >= 0 and second == first + 1
    again = manager.txt2img(small(seed=first), None).images[0]
    assert np.abs(pixels(again) - pixels(processed.images[0])).max() <= 1


def test_samplers_differ(manager):
    a = manager.txt2img(small(sampler_name="Euler a"), None).images[0]
    e = manager.txt2img(small(sampler_name="Euler"), None).images[0]
    assert not np.array_equal(pixels(a), pixels(e))


def test_counter_never_overwrites(manager, tmp_path):
    folder = tmp_path / "txt2img-images" / datetime.date.today().isoformat()
    folder.mkdir(parents=True)
    (folder / "00007-1.png").write_bytes(b"keep me")
    [path] = manager.txt2img(small(seed=1), tmp_path).paths
    assert path.name == "00008-1.png"
    assert (folder / "00007-1.png").read_bytes() == b"keep me"
    assert not list(folder.glob("*.tmp"))


def test_interrupt_stops_and_keeps_finished_images(manager):
    calls = []

    def on_progress(done, total):
        calls.append(done)
        if done == 8:  # during the second image of two single-image batches of 6 steps
            manager.interrupt()

    processed = manager.txt2img(small(n_iter=2), None, on_progress=on_progress)
    assert processed.interrupted
    assert len(processed.images) == 1
    # the next job is not affected by the old interrupt
    assert len(manager.txt2img(small(), None).images) == 1


@pytest.mark.parametrize("change, message", [
    (dict(width=65), "width must be a multiple of 8"),
    (dict(height=4096), "height must be between 64 and 2048"),
    (dict(steps=0), "steps must be between 1 and 150"),
    (dict(batch_size=9), "batch size must be between 1 and 8"),
    (dict(sampler_name="Nope"), "unknown sampler 'Nope'"),
])
def test_bad_requests_are_refused_clearly(manager, change, message):
    with pytest.raises(ValueError, match=message):
        manager.txt2img(small(**change), None)


def test_invalid_params_is_a_value_error():
    with pytest.raises(InvalidParams):
        small(seed=-5).validate()

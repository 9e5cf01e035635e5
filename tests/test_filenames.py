"""A1111's images filename and directory name patterns: each tag from a known picture, names safe whatever the
prompt, and the pattern applied when the manager saves."""
import datetime
import os

import pytest
from PIL import Image

from conftest import small
from webui.engine.imaging import filenames
from webui.engine.imaging.filenames import FilenameGenerator, Naming
from webui.engine.imaging.saving import save_image
from webui.engine.params import GenerationParams
from webui.engine.prompts.styles import StyleDatabase
from webui.engine.settings import Settings

TODAY = datetime.date(2024, 1, 2)
STARTED = datetime.datetime(2024, 5, 6, 7, 8, 9).timestamp()
PICTURE = GenerationParams(prompt="cinematic still, a cat, film grain", negative_prompt="ugly hands", steps=20,
                           sampler_name="DPM++ 2M", scheduler="Automatic", cfg_scale=7.0, seed=1237, model="tiny",
                           model_hash="abcdef1234", clip_skip=2, denoising_strength=0.5,
                           vae="kl-f8.vae.safetensors")


def generator(params=PICTURE, seed=1237, index=3, job=None, styles=None, settings=None):
    job = job or PICTURE.replace(batch_size=2, n_iter=2, seed=-1)
    naming = Naming(params, settings or Settings(), job=job, index=index, styles=styles, started=STARTED)
    return FilenameGenerator(naming, seed, Image.new("RGB", (64, 48), (10, 20, 30)), TODAY)


@pytest.fixture
def styles(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\nCinematic,"cinematic still, {prompt}, film grain",\n',
                    encoding="utf-8")
    return StyleDatabase(path)


@pytest.mark.parametrize("tag, expected", [
    ("seed", "1237"),
    ("seed_first", "1234"),  # 4th image of a job of 2x2: seeds 1234..1237
    ("seed_last", "1237"),
    ("steps", "20"),
    ("cfg", "7.0"),
    ("width", "64"),
    ("height", "48"),
    ("sampler", "DPM++ 2M"),
    ("scheduler", "Karras"),  # "Automatic" is the sampler's default schedule, capitalised as A1111
    ("model_hash", "abcdef1234"),
    ("model_name", "tiny"),
    ("prompt", "cinematic_still,_a_cat,_film_grain"),
    ("prompt_spaces", "cinematic still, a cat, film grain"),
    ("prompt_words", "cinematic still a cat film grain"),
    ("prompt_hash", "3042f898"),  # sha256 of the prompt, 8 hex digits
    ("prompt_hash<4>", "3042"),
    ("negative_prompt", "ugly_hands"),
    ("clip_skip", "2"),
    ("batch_number", "2"),
    ("generation_number", "4"),
    ("date", "2024-01-02"),
    ("datetime<%Y>", str(datetime.date.today().year)),
    ("datetime<%Y/%m/%d><UTC>", datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d")),
    ("job_timestamp", "20240506070809"),
    ("denoising", "0.5"),
    ("vae_filename", "kl-f8"),
    ("none", ""),
])
def test_each_tag_is_a1111s(tag, expected):
    assert generator().apply(f"[{tag}]") == expected


def test_a_fixed_seed_places_the_picture_even_after_a_skipped_batch():
    job = PICTURE.replace(batch_size=2, n_iter=2, seed=1234)
    g = generator(index=1, job=job)  # batch 0 was skipped: one picture kept before this one
    assert g.apply("[seed_first] [seed_last] [batch_number] [generation_number]") == "1234 1237 2 4"
    varied = PICTURE.replace(subseed=11, subseed_strength=0.5)
    g = generator(varied, index=0, job=varied.replace(batch_size=2, n_iter=2, subseed=8))
    assert g.apply("[seed_first] [seed_last] [generation_number]") == "1237 1237 4"


def test_prompt_hash_is_sha256_of_the_prompt():
    import hashlib

    assert generator().apply("[prompt_hash]") == hashlib.sha256(PICTURE.prompt.encode()).hexdigest()[:8]


def test_styles_are_read_back_off_the_prompt(styles):
    assert generator(styles=styles).apply("[styles]|[prompt_no_styles]") == "Cinematic|a cat"
    assert generator().apply("[styles]|[prompt_no_styles]") == f"None|{PICTURE.prompt}"


def test_prompt_words_stops_at_eight_words():
    many = PICTURE.replace(prompt="one, two; three four (five) six seven eight nine ten")
    assert generator(many).apply("[prompt_words]") == "one two three four five six seven eight"
    assert generator(PICTURE.replace(prompt="!!!")).apply("[prompt_words]") == "empty"


def test_not_applicable_tags_take_the_text_before_them_away():
    single = PICTURE.replace(denoising_strength=None)
    g = generator(single, index=0, job=single)
    assert g.apply("[seed]-[seed_last]-[batch_number]-[generation_number]-[denoising]x") == "1237x"
    assert g.apply("[seed_first]") == "1237"


def test_unknown_tags_and_tags_without_params_stay_as_written():
    assert generator().apply("a[unknown]b[foo<x>]c") == "a[unknown]b[foo]c"
    bare = FilenameGenerator(Naming(), None, Image.new("RGB", (8, 8)), TODAY)
    assert bare.apply("[steps]-[prompt]-[width]-[date]-[prompt_words]") == "[steps]-[prompt]-8-2024-01-02-empty"


HOSTILE = ["../../etc/passwd", 'a/b\\c:*?"<>|', "x" * 1000, "🐱" * 300 + " cat", "two\nlines\r\tand\x00nul",
           " . leading dots and spaces . ", "..", "CON"]


@pytest.mark.parametrize("prompt", HOSTILE)
@pytest.mark.parametrize("numbered", [True, False])
def test_a_hostile_prompt_gives_one_safe_name_under_the_outputs_folder(tmp_path, prompt, numbered):
    params = PICTURE.replace(prompt=prompt)
    settings = Settings(samples_filename_pattern="[prompt_spaces]-[prompt]-[prompt_no_styles]",
                        save_images_add_number=numbered, directories_filename_pattern="[prompt_spaces]")
    outdir = tmp_path / "out"
    paths = [save_image(Image.new("RGB", (8, 8)), outdir, 7, "x", naming=Naming(params, settings))
             for _ in range(2)]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)  # a taken name is never overwritten
    for path in paths:
        relative = path.relative_to(outdir)
        assert len(relative.parts) <= 2  # at most the one folder of the directory pattern
        assert os.path.realpath(path).startswith(os.path.realpath(outdir) + os.sep)
        for part in relative.parts:
            assert len(part.encode()) <= filenames.NAME_MAX_BYTES
            assert part not in (".", "..") and not part.startswith((".", " ")) and not part.endswith((".", " "))
            assert not set(part) & set('/\\:*?"<>|#\n\r\t\x00')
            assert part.split(".")[0].upper() not in ("CON", "NUL")
        assert path.suffix == ".png"


def test_a_long_name_keeps_its_counter_and_extension(tmp_path):
    settings = Settings(samples_filename_pattern="[prompt_spaces][prompt_spaces]")
    params = PICTURE.replace(prompt="🐱" * 200)
    path = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x", fmt="webp", naming=Naming(params, settings))
    assert path.name.startswith("00000-🐱") and path.name.endswith("🐱.webp")
    assert len(path.name.encode()) <= 255 and len(path.name.encode()) > 240
    assert filenames.sanitize_part("é" * 200) == "é" * 128  # one tag: A1111's 128 characters


def test_default_layout_is_todays(tmp_path):
    first = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x", today=TODAY)
    plain = save_image(Image.new("RGB", (8, 8)), tmp_path, None, "x", today=TODAY)
    assert [first.relative_to(tmp_path).as_posix(), plain.relative_to(tmp_path).as_posix()] == [
        "2024-01-02/00000-7.png", "2024-01-02/00001.png"]
    flat = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x",
                      naming=Naming(PICTURE.replace(prompt="a cat"), Settings(save_to_dirs=False)))
    assert flat.relative_to(tmp_path).as_posix() == "00000-7-a cat.png"  # A1111's [seed]-[prompt_spaces]


def test_without_numbers_a_taken_name_gets_a_suffix(tmp_path):
    settings = Settings(samples_filename_pattern="[prompt]", save_images_add_number=False, save_to_dirs=False)
    names = [save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x",
                        naming=Naming(PICTURE.replace(prompt="a cat"), settings)).name for _ in range(3)]
    assert names == ["a_cat.png", "a_cat-1.png", "a_cat-2.png"]
    reserved = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x",
                          naming=Naming(PICTURE.replace(prompt="nul"), settings))
    assert reserved.name == "_nul.png"
    empty = Settings(samples_filename_pattern="[none]", save_images_add_number=False, save_to_dirs=False)
    assert save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x", naming=Naming(PICTURE, empty)).name == "00000.png"


def test_slashes_in_the_directory_pattern_make_folders_but_never_leave_the_outputs(tmp_path):
    settings = Settings(directories_filename_pattern="../[model_name]/./[date]/../..")
    path = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x", today=TODAY, naming=Naming(PICTURE, settings))
    assert path.relative_to(tmp_path).as_posix() == "tiny/2024-01-02/00000-7.png"
    words = Settings(directories_filename_pattern="")  # A1111: [prompt_words]
    path = save_image(Image.new("RGB", (8, 8)), tmp_path, 7, "x", naming=Naming(PICTURE, words))
    assert path.parent.name == "cinematic still a cat film grain"


def test_the_manager_saves_by_the_pattern(manager, tmp_path):
    manager.update_settings(samples_filename_pattern="[seed]-[prompt_spaces]",
                            directories_filename_pattern="[model_name]")
    processed = manager.txt2img(small(prompt="a cat: the best?", steps=2, batch_size=2), tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in processed.paths] == [
        "txt2img-images/tiny/00000-1234-a cat_ the best_.png", "txt2img-images/tiny/00001-1235-a cat_ the best_.png"]
    assert all(p.is_file() for p in processed.paths)

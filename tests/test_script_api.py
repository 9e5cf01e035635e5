"""The Script API: an A1111 script runs with only its imports changed; always-on extensions patch the model for
their job alone and compose; a broken extension is reported and skipped or fails only its job."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from conftest import small
from webui.engine.errors import UserError
from webui.scripts import callbacks
from webui.scripts.extensions import load_scripts
from webui.scripts.processing import StableDiffusionProcessingTxt2Img

# Written as an A1111 script is, in A1111's idiom; only the two import lines differ
# (A1111: `import modules.scripts as scripts`, `from modules.processing import process_images, Processed`).
A1111_SCRIPT = '''
import gradio as gr

import webui.scripts.script_api as scripts
from webui.scripts.processing import process_images, Processed


class Script(scripts.Script):
    def title(self):
        return "Add a word"

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        word = gr.Textbox(label="Word", value="sunset")
        times = gr.Slider(label="Times", minimum=1, maximum=3, value=1, step=1)
        return [word, times]

    def run(self, p, word, times):
        p.prompt = p.prompt + ", " + ", ".join([word] * int(times))
        p.extra_generation_params["Added word"] = word
        proc = process_images(p)
        proc.info = proc.info + "\\nadded " + word
        return proc


class Stamp(scripts.Script):
    def title(self):
        return "Stamp"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Stamp", open=False):
            enabled = gr.Checkbox(label="Enable stamp", value=False)
        return [enabled]

    def process(self, p, enabled):
        if enabled:
            self.seen_seeds = list(p.all_seeds)
            self.seen_prompts = list(p.all_prompts)
            p.extra_generation_params["Stamp"] = "on"

    def postprocess_image(self, p, pp, enabled):
        if enabled:
            image = pp.image.copy()
            image.paste((0, 0, 0), (0, 0, 8, 8))
            pp.image = image
'''


def attention_extension(name: str, factor: float, kind: str) -> str:
    return f'''
import webui.scripts.script_api as scripts


class Script(scripts.Script):
    calls = 0

    def title(self):
        return "{name}"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return []

    def process(self, p):
        def patch(call, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            type(self).calls += 1
            return call(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs) * {factor}
        p.patches.replace_attention(patch, kind="{kind}")
'''


def write_extension(root, name, files: dict):
    for relative, text in files.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def extensions_dir(tmp_path):
    callbacks.clear()
    yield tmp_path / "extensions"
    callbacks.clear()


def job(manager, system, args=None, outdir=None, **fields):
    p = StableDiffusionProcessingTxt2Img(small(steps=3, seed=21, **fields), manager, outdir)
    runner = system.txt2img
    processed = runner.run(p, args if args is not None else runner.default_args())
    if processed is None:
        from webui.scripts.processing import process_images
        processed = process_images(p)
    return p, processed


def test_an_a1111_script_runs_with_only_its_imports_changed(manager, extensions_dir, tmp_path):
    write_extension(extensions_dir, "a1111-style", {"scripts/add_word.py": A1111_SCRIPT})
    system = load_scripts(extensions_dir)
    runner = system.txt2img
    assert "Add a word" in runner.titles() and [s.display_title for s in runner.alwayson] == ["ControlNet", "Stamp"]
    args = runner.build_args("Add a word", ["dusk", 2], {"Stamp": {"args": [True]}})
    p, processed = job(manager, system, args, tmp_path / "out")
    stamp = runner.find_alwayson("Stamp")
    assert p.prompt == "a cat, dusk, dusk"
    assert stamp.seen_seeds == [21] and stamp.seen_prompts == ["a cat, dusk, dusk"]
    assert processed.info.endswith("\nadded dusk")
    text = processed.infotexts[0]
    assert text.startswith("a cat, dusk, dusk\n") and "Added word: dusk" in text and "Stamp: on" in text
    pixels = np.asarray(processed.images[0])
    assert (pixels[:8, :8] == 0).all()
    plain = manager.txt2img(small(steps=3, seed=21, prompt="a cat, dusk, dusk"), None)
    assert np.array_equal(pixels[8:, 8:], np.asarray(plain.images[0])[8:, 8:]), "only the stamp differs"
    saved = list((tmp_path / "out" / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1 and (np.asarray(__import__("PIL.Image").Image.open(saved[0]))[:8, :8] == 0).all()


def test_two_attention_extensions_compose_and_the_next_job_is_clean(manager, extensions_dir):
    plain = np.asarray(manager.txt2img(small(steps=3, seed=21), None).images[0])
    write_extension(extensions_dir, "sharpen", {"scripts/a.py": attention_extension("Sharpen", 1.7, "cross")})
    write_extension(extensions_dir, "soften", {"scripts/b.py": attention_extension("Soften", 0.6, "self")})
    both = load_scripts(extensions_dir)
    _, together = job(manager, both)
    sharpen, soften = (both.txt2img.find_alwayson(n) for n in ("Sharpen", "Soften"))
    assert type(sharpen).calls > 0 and type(soften).calls > 0, "both patches ran in the one job"
    only_sharpen = load_scripts(extensions_dir, disabled={"soften"})
    _, one = job(manager, only_sharpen)
    together, one = np.asarray(together.images[0]), np.asarray(one.images[0])
    assert not np.array_equal(together, plain) and not np.array_equal(one, plain)
    assert not np.array_equal(together, one), "the second extension's effect is there too"
    after = np.asarray(manager.txt2img(small(steps=3, seed=21), None).images[0])
    assert np.array_equal(after, plain), "after the job the model draws exactly as unpatched"


def test_broken_extensions_are_reported_and_the_server_goes_on(manager, extensions_dir, caplog):
    write_extension(extensions_dir, "syntax", {"scripts/bad.py": "def broken(:\n"})
    write_extension(extensions_dir, "bad-ui", {"scripts/ui.py": '''
        import webui.scripts.script_api as scripts

        class Script(scripts.Script):
            def title(self):
                return "Bad UI"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def ui(self, is_img2img):
                raise RuntimeError("ui exploded")
    '''})
    write_extension(extensions_dir, "bad-process", {"scripts/proc.py": '''
        import webui.scripts.script_api as scripts

        class Script(scripts.Script):
            def title(self):
                return "Bad process"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p):
                p.patches.replace_attention(lambda call, *a, **k: call(*a, **k) * 3)
                raise ValueError("process exploded")
    '''})
    plain = np.asarray(manager.txt2img(small(steps=3, seed=21), None).images[0])
    system = load_scripts(extensions_dir)
    errors = "\n".join(system.errors)
    assert "syntax: bad.py: SyntaxError" in errors
    system.txt2img.ensure_args_layout()
    assert "ui() failed: RuntimeError: ui exploded" in "\n".join(system.errors)
    assert "Bad UI" not in [s.display_title for s in system.txt2img.alwayson], "a script whose UI fails is skipped"
    with pytest.raises(UserError, match="script 'Bad process' process\\(\\) failed: ValueError: process exploded"):
        job(manager, system)
    after = np.asarray(manager.txt2img(small(steps=3, seed=21), None).images[0])
    assert np.array_equal(after, plain)
    assert "SyntaxError" in caplog.text


def test_callbacks_run_in_the_job_and_go_with_a_disabled_extension(manager, extensions_dir, tmp_path):
    write_extension(extensions_dir, "hooks", {"scripts/hooks.py": '''
        from webui.scripts import callbacks as script_callbacks

        seen = []

        def denoiser(params):
            seen.append((params.sampling_step, params.total_sampling_steps))

        def before_saved(params):
            params.pnginfo["parameters"] += ", Hooked: yes"

        script_callbacks.on_cfg_denoiser(denoiser)
        script_callbacks.on_before_image_saved(before_saved)
    '''})
    system = load_scripts(extensions_dir)
    _, processed = job(manager, system, outdir=tmp_path / "out")
    import sys
    module = next(m for name, m in sys.modules.items() if name.startswith("webui_extension_hooks"))
    assert module.seen == [(0, 3), (1, 3), (2, 3)]
    from webui.engine.infotext import read_png_infotext
    saved = next((tmp_path / "out").rglob("*.png"))
    assert read_png_infotext(saved).endswith(", Hooked: yes")
    load_scripts(extensions_dir, disabled={"hooks"})
    assert not callbacks.has("cfg_denoiser") and not callbacks.has("before_image_saved")


def test_extension_order_follows_metadata(extensions_dir):
    from webui.scripts.extensions import discover

    write_extension(extensions_dir, "a-first", {"metadata.ini": "[Extension]\nName = a-first\nAfter = z-last\n"})
    write_extension(extensions_dir, "m-mid", {"metadata.ini": "[Extension]\nName = m-mid\nBefore = a-first\n"})
    write_extension(extensions_dir, "z-last", {"scripts/.keep": ""})
    write_extension(extensions_dir, "needs", {"metadata.ini": "[Extension]\nName = needs\nRequires = absent\n"})
    names = [e.name for e in discover(extensions_dir) if not e.builtin]
    assert names.index("z-last") < names.index("a-first") and names.index("m-mid") < names.index("a-first")
    needs = next(e for e in discover(extensions_dir) if e.name == "needs")
    assert needs.errors == ["requires absent, which is not installed"]


def test_install_py_runs_only_when_allowed(extensions_dir):
    write_extension(extensions_dir, "installer", {"install.py": "open('ran', 'w').write('yes')\n",
                                                  "scripts/.keep": ""})
    load_scripts(extensions_dir)
    assert not (extensions_dir / "installer" / "ran").exists()
    load_scripts(extensions_dir, allow_install=True)
    assert (extensions_dir / "installer" / "ran").exists()


def test_unknown_script_and_too_many_args_are_clear(extensions_dir):
    system = load_scripts(extensions_dir)
    with pytest.raises(UserError, match="Script 'Nope' not found"):
        system.txt2img.build_args("Nope", [], None)
    with pytest.raises(UserError, match="takes 18 arguments, got 19"):
        system.txt2img.build_args("X/Y/Z plot", [0] * 19, None)

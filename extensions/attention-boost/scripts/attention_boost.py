"""Example extension: "Attention boost", an always-visible script that scales the cross-attention output (how
strongly the prompt steers each UNet block) for one job.

It shows the four things an extension usually needs:
- a UI: an accordion under the generation settings (`ui()` returns the controls; their values are the args);
- an infotext field: `Attention boost: 1.3` on every picture made with it on;
- a model patch: `p.patches.replace_attention(...)`, registered in `process()`; the manager applies it for this
  job only and removes it afterwards, so it composes with other extensions and leaves the next job clean;
- an API route, added through `on_app_started`: GET /attention-boost/v1/info.

Through the API: "alwayson_scripts": {"Attention boost": {"args": [true, 1.3]}}."""
import gradio as gr

import webui.scripts.script_api as scripts
from webui.scripts import callbacks

TITLE = "Attention boost"
INFOTEXT_KEY = "Attention boost"
LIMITS = (0.5, 2.0)


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion(TITLE, open=False, elem_id=self.elem_id("accordion")):
            enabled = gr.Checkbox(label="Enable", value=False, elem_id=self.elem_id("enabled"))
            factor = gr.Slider(label="Cross-attention factor", minimum=LIMITS[0], maximum=LIMITS[1], value=1.3,
                               step=0.05, elem_id=self.elem_id("factor"))
        self.infotext_fields = [(factor, INFOTEXT_KEY)]
        return [enabled, factor]

    def process(self, p, enabled=False, factor=1.3):
        if not enabled:
            return
        factor = float(factor)
        if not LIMITS[0] <= factor <= LIMITS[1]:
            raise ValueError(f"the factor must be between {LIMITS[0]} and {LIMITS[1]}, got {factor}")
        p.extra_generation_params[INFOTEXT_KEY] = factor

        def boost(call, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            return call(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs) * factor
        p.patches.replace_attention(boost, kind="cross")


def add_routes(demo, app):
    @app.get("/attention-boost/v1/info")
    def info():
        return {"title": TITLE, "infotext_key": INFOTEXT_KEY, "minimum": LIMITS[0], "maximum": LIMITS[1]}


callbacks.on_app_started(add_routes)

"""ControlNet, as the sd-webui-controlnet extension behaves, on the engine's per-job patches: model files and
their layouts (files.py, model.py), units and control modes (units.py), preprocessors (preprocess.py), and the
residuals each UNet evaluation gets (residuals.py)."""

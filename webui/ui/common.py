"""Helpers shared by the tabs."""
from __future__ import annotations

import functools

import gradio as gr

from ..engine.errors import UserError


def user_errors_as_gradio(fn):
    """Show a UserError as gradio's error message instead of a generic 'Error'. functools.wraps keeps the
    signature visible, which gradio needs to find the inputs and the gr.Progress argument."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from e
    return wrapped

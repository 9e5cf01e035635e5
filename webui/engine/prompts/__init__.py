"""Prompt → text-encoder conditioning.

For now one 77-token chunk (BOS, up to 75 tokens, EOS, padded with EOS as A1111 pads SD1); A1111's prompt
grammar (emphasis, long prompts, editing, clip skip) builds on this entry point."""
from __future__ import annotations

import torch


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, text: str) -> torch.Tensor:
    """Conditioning of shape (1, 77, width) on the text encoder's device."""
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device), return_dict=False)[0]

"""Prompt text → CLIP conditioning the way A1111 builds it (sd_hijack_clip.py): emphasis weights per token,
75-token chunks with comma backtrack and BREAK, textual-inversion vectors spliced in, clip skip."""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .parser import parse_prompt_attention

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack: a chunk breaks after the last comma within this many
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")
CACHE_SIZE = 64  # distinct (prompt, clip skip, emphasis) conditionings kept per model


@dataclass
class PromptChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, object]] = field(default_factory=list)  # (offset in chunk, Embedding)


def uses_emphasis(text: str) -> bool:
    return "(" in text or "[" in text


def target_token_count(count: int) -> int:
    """The UI counter's denominator: 75, 150, … (A1111 grows it by whole chunks)."""
    return math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


class PromptEncoder:
    """One text encoder + tokenizer (+ embeddings). Encodings are cached per (text, clip skip, emphasis)."""

    def __init__(self, tokenizer, text_encoder, embeddings=None, *, pad_id: int | None = None,
                 hidden_layer: int | None = None, final_norm: bool = True, pooled: bool = False):
        """hidden_layer None: the last layer, moved up by clip skip (SD1). Otherwise a fixed hidden state
        (SD2: -2 with the final norm; SDXL: -2 without it) and clip skip does not apply, as in A1111.
        pad_id: OpenCLIP encoders (SD2, SDXL's second) pad with 0, not with EOS. pooled: keep the projected
        pooled output of the first chunk (SDXL's second encoder)."""
        self.tokenizer, self.text_encoder, self.embeddings = tokenizer, text_encoder, embeddings
        self.hidden_layer, self.final_norm, self.pooled = hidden_layer, final_norm, pooled
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = self.id_end if pad_id is None else pad_id
        self.comma_token = tokenizer.get_vocab().get(",</w>")
        self._cache: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ tokens

    def tokenize_line(self, line: str, emphasis: str = "Original") -> tuple[list[PromptChunk], int]:
        """Chunks of 77 (BOS, up to 75 tokens, EOS, padding) and the prompt's token count."""
        parsed = parse_prompt_attention(line) if emphasis != "None" else [(line, 1.0)]
        texts = [text for text, _ in parsed]
        ids = (self.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
               if texts else [])
        chunks: list[PromptChunk] = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1

        def next_chunk():
            nonlocal chunk, token_count, last_comma
            token_count += len(chunk.tokens)
            pad = CHUNK_LENGTH - len(chunk.tokens)
            # BOS, text, EOS, then padding: A1111 pads with EOS and then sets everything after the first EOS to
            # the pad id, which is EOS itself for CLIP (SD1) and 0 for OpenCLIP (SD2, SDXL's bigG). The EOS must
            # follow the text: OpenCLIP's causal attention and pooled output read the sequence up to it.
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end] + [self.id_pad] * pad
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0] + [1.0] * pad
            chunks.append(chunk)
            chunk, last_comma = PromptChunk(), -1

        for tokens, (text, weight) in zip(ids, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif (len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                      and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK):
                    # move the words after the last comma to the next chunk, so a phrase is not cut in two
                    split = last_comma + 1
                    moved_tokens, moved_mults = chunk.tokens[split:], chunk.multipliers[split:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:split], chunk.multipliers[:split]
                    next_chunk()
                    chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
                if len(chunk.tokens) == CHUNK_LENGTH:
                    next_chunk()
                embedding, span = (self.embeddings.find_embedding_at_position(tokens, position)
                                   if self.embeddings is not None else (None, None))
                if embedding is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    position += 1
                    continue
                n_vectors = embedding.vectors.shape[0]
                if len(chunk.tokens) + n_vectors > CHUNK_LENGTH:
                    next_chunk()
                chunk.fixes.append((len(chunk.tokens), embedding))
                chunk.tokens += [0] * n_vectors
                chunk.multipliers += [weight] * n_vectors
                position += span
        if chunk.tokens or not chunks:
            next_chunk()
        return chunks, token_count

    def token_count(self, line: str) -> tuple[int, int]:
        """(tokens used, counter target) for the UI: e.g. (23, 75), (80, 150)."""
        _, count = self.tokenize_line(line)
        return count, target_token_count(count)

    # ------------------------------------------------------------------ encode

    @torch.no_grad()
    def encode(self, line: str, clip_skip: int = 1, emphasis: str = "Original") -> torch.Tensor:
        """Conditioning (1, 77 × chunks, width) on the text encoder's device."""
        return self.encode_with_pooled(line, clip_skip, emphasis)[0]

    @torch.no_grad()
    def encode_with_pooled(self, line: str, clip_skip: int = 1, emphasis: str = "Original"):
        """(conditioning, pooled output of the first chunk or None)."""
        key = (line, clip_skip, emphasis)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            chunks, _ = self.tokenize_line(line, emphasis)
            encoded = [self._encode_chunk(c, clip_skip, emphasis) for c in chunks]
            self._cache[key] = (torch.cat([z for z, _ in encoded], dim=1), encoded[0][1])
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._cache[key]

    def clear_cache(self):
        """Text-encoder weights changed (e.g. a LoRA): cached conditionings are stale."""
        self._cache.clear()

    def used_embeddings(self, line: str) -> list:
        chunks, _ = self.tokenize_line(line)
        seen = {}
        for chunk in chunks:
            for _, embedding in chunk.fixes:
                seen[embedding.name] = embedding
        return list(seen.values())

    def _encode_chunk(self, chunk: PromptChunk, clip_skip: int, emphasis: str):
        # with --medvram/--lowvram an accelerate hook says where the encoder runs; its weights may sit elsewhere
        hook = getattr(self.text_encoder, "_hf_hook", None)
        device = getattr(hook, "execution_device", None) or next(self.text_encoder.parameters()).device
        ids = torch.tensor([chunk.tokens], device=device)
        if self.hidden_layer is None and clip_skip <= 1:
            wanted = None
        else:
            wanted = self.hidden_layer if self.hidden_layer is not None else -clip_skip
        with self._spliced_embeddings(chunk.fixes):
            out = self.text_encoder(input_ids=ids, output_hidden_states=wanted is not None, return_dict=True)
        if wanted is None:
            z = out.last_hidden_state
        else:
            # A1111: a hidden state counted from the end (clip skip), through the final layer norm for SD1/SD2
            layer = out.hidden_states[max(wanted, -len(out.hidden_states))]
            z = self._final_layer_norm()(layer) if self.final_norm else layer
        pooled = getattr(out, "text_embeds", None) if self.pooled else None
        if emphasis in ("Original", "No norm"):
            multipliers = torch.tensor(chunk.multipliers, device=z.device, dtype=z.dtype)[None, :, None]
            # "(x:1e309)" parses to inf: a black image helps nobody, so such weights count as 1
            multipliers = torch.where(torch.isfinite(multipliers), multipliers, torch.ones_like(multipliers))
            original_mean = z.mean()
            z = z * multipliers
            if emphasis == "Original":
                z = z * (original_mean / z.mean())
        return z, pooled

    def _final_layer_norm(self):
        model = self.text_encoder
        return getattr(model, "final_layer_norm", None) or model.text_model.final_layer_norm

    @contextlib.contextmanager
    def _spliced_embeddings(self, fixes):
        """Textual-inversion vectors replace the placeholder tokens' embeddings (offset 1: after BOS)."""
        if not fixes:
            yield
            return
        token_embedding = self.text_encoder.embeddings.token_embedding

        def replace(module, args, output):
            output = output.clone()
            for offset, embedding in fixes:
                vectors = embedding.vectors.to(output.device, output.dtype)
                output[0, 1 + offset:1 + offset + vectors.shape[0]] = vectors
            return output

        handle = token_embedding.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

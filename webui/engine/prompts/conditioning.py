"""A job's conditioning over time: prompt editing switches it at given steps, AND splits the positive prompt
into weighted parts (composable diffusion), and cond / uncond are padded to one length for a single UNet batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .encoder import PromptEncoder, uses_emphasis
from .parser import ExtraNetworkTag, extract_extra_networks, get_prompt_schedules, split_and

Schedule = list[tuple[int, torch.Tensor]]  # (last step it applies to, conditioning)


class DualEncoder:
    """SDXL's two text encoders as one: contexts side by side (768 + 1280), pooled output from the second.
    Chunking, token counts and embeddings follow the first, as both share one vocabulary."""

    def __init__(self, first: PromptEncoder, second: PromptEncoder):
        self.first, self.second = first, second

    def encode_with_pooled(self, line: str, clip_skip: int = 1, emphasis: str = "Original"):
        a, _ = self.first.encode_with_pooled(line, clip_skip, emphasis)
        b, pooled = self.second.encode_with_pooled(line, clip_skip, emphasis)
        length = max(a.shape[1], b.shape[1])  # embeddings may give the encoders different chunk counts
        return torch.cat([_repeat_last(a, length), _repeat_last(b, length)], dim=-1), pooled

    def encode(self, line: str, clip_skip: int = 1, emphasis: str = "Original") -> torch.Tensor:
        return self.encode_with_pooled(line, clip_skip, emphasis)[0]

    def token_count(self, line: str):
        return self.first.token_count(line)

    def used_embeddings(self, line: str):
        return self.first.used_embeddings(line)

    def clear_cache(self):
        self.first.clear_cache()
        self.second.clear_cache()


def _at(schedule: Schedule, step: int) -> torch.Tensor:
    for end, cond in schedule:
        if step <= end:
            return cond
    return schedule[-1][1]


def _repeat_last(cond: torch.Tensor, length: int) -> torch.Tensor:
    """A1111's reconstruct_multicond_batch: AND parts of different lengths repeat their last vector."""
    missing = length - cond.shape[1]
    return torch.cat([cond, cond[:, -1:].expand(-1, missing, -1)], dim=1) if missing > 0 else cond


def _pad_with_empty(cond: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    """A1111's pad_cond: whole empty-prompt chunks appended so cond and uncond share one UNet batch."""
    repeats = (length - cond.shape[1]) // empty.shape[1]
    return torch.cat([cond, empty.repeat(1, repeats, 1)], dim=1) if repeats > 0 else cond


@dataclass
class Conditioning:
    parts: list[tuple[Schedule, float]]  # AND parts of the prompt with their weights
    uncond: Schedule
    empty: torch.Tensor
    padded: bool = False  # set once cond and uncond needed padding ("Pad conds" in infotext)
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)  # id(context) → pooled (SDXL)

    def pooled_at_step(self, step: int) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """Pooled outputs matching at_step's conds and uncond, or None for models without them."""
        if not self.pooled:
            return None
        conds = [self.pooled[id(_at(schedule, step))] for schedule, _ in self.parts]
        return conds, self.pooled[id(_at(self.uncond, step))]

    def at_step(self, step: int) -> tuple[list[torch.Tensor], list[float], torch.Tensor]:
        """(one tensor per AND part, their weights, uncond), all of one token length, for model call `step`."""
        conds = [_at(schedule, step) for schedule, _ in self.parts]
        longest = max(c.shape[1] for c in conds)
        conds = [_repeat_last(c, longest) for c in conds]
        uncond = _at(self.uncond, step)
        if uncond.shape[1] != longest:
            self.padded = True
            length = max(longest, uncond.shape[1])
            conds = [_pad_with_empty(c, length, self.empty) for c in conds]
            uncond = _pad_with_empty(uncond, length, self.empty)
        return conds, [w for _, w in self.parts], uncond


def prompt_token_count(encoder: PromptEncoder, prompt: str, steps: int) -> tuple[int, int]:
    """The UI counter as A1111's: the longest text the prompt turns into (after tags, AND and editing)."""
    text, _ = extract_extra_networks(prompt)
    lines = [line for schedule in get_prompt_schedules([part for part, _ in split_and(text) or [("", 1.0)]], steps)
             for _, line in schedule]
    return max((encoder.token_count(line) for line in lines), key=lambda counts: counts[0])


@dataclass
class PromptInfo:
    """What the job learnt from the prompts: tags for extra networks, and infotext fields."""
    extra_networks: list[ExtraNetworkTag] = field(default_factory=list)
    infotext: dict[str, str] = field(default_factory=dict)


def build_conditioning(encoder: PromptEncoder, prompt: str, negative_prompt: str, steps: int, clip_skip: int = 1,
                       emphasis: str = "Original",
                       zero_empty_negative: bool = False) -> tuple[Conditioning, PromptInfo]:
    """zero_empty_negative (SDXL, base and refiner): an empty negative prompt conditions with zeros, context
    and pooled, as A1111's sd_models_xl.get_learned_conditioning (force_zero_embeddings=['txt'] when every text
    of the negative prompt's schedule is '') and diffusers' force_zeros_for_empty_prompt do."""
    text, tags = extract_extra_networks(prompt)
    negative, negative_tags = extract_extra_networks(negative_prompt)
    parts = split_and(text) or [("", 1.0)]
    schedules = get_prompt_schedules([part for part, _ in parts] + [negative], steps)
    pooled: dict[int, torch.Tensor] = {}

    def encode(line):  # the encoder caches per text
        context, pool = encoder.encode_with_pooled(line, clip_skip, emphasis)
        if pool is not None:
            pooled[id(context)] = pool
        return context

    uncond = [(end, encode(line)) for end, line in schedules[-1]]
    if zero_empty_negative and all(line == "" for _, line in schedules[-1]):
        zeros = [(end, torch.zeros_like(context)) for end, context in uncond]
        for (_, context), (_, zero) in zip(uncond, zeros):
            if id(context) in pooled:
                pooled[id(zero)] = torch.zeros_like(pooled[id(context)])
        uncond = zeros
    cond = Conditioning(
        parts=[([(end, encode(line)) for end, line in schedule], weight)
               for schedule, (_, weight) in zip(schedules[:-1], parts)],
        uncond=uncond,
        empty=encode(""),
        pooled=pooled,
    )
    info = PromptInfo(extra_networks=tags + negative_tags)
    lines = {line for schedule in schedules for _, line in schedule}
    if emphasis != "Original" and any(uses_emphasis(line) for line in lines):
        info.infotext["Emphasis"] = emphasis
    used = {}
    for line in sorted(lines):
        for embedding in encoder.used_embeddings(line):
            used[embedding.name] = embedding
    if used:
        # A1111 strips ":" and "," from names inside the list
        info.infotext["TI hashes"] = ", ".join(
            f"{name.replace(':', '').replace(',', '')}: {emb.hash}" for name, emb in used.items())
    return cond, info

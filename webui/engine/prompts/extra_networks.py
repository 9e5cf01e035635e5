"""Extra-network tags such as ``<lora:name:0.8>``: ``extract_extra_networks`` takes them out of a prompt as
A1111's ``extra_networks.parse_prompt`` does."""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ExtraNetworkTag", "extract_extra_networks"]

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkTag:
    """``<kind:arg1:arg2...>``, e.g. ``<lora:foo:0.8>`` → ``ExtraNetworkTag("lora", ("foo", "0.8"))``.
    Named arguments stay strings: ``<lora:foo:te=0.5:unet=1>`` → args ``("foo", "te=0.5", "unet=1")``."""

    kind: str
    args: tuple[str, ...]

    @property
    def positional(self) -> tuple[str, ...]:
        """The arguments without '=' (A1111's ``ExtraNetworkParams.positional``)."""
        return tuple(a for a in self.args if len(a.split("=", 2)) != 2)

    @property
    def named(self) -> dict[str, str]:
        """``key=value`` arguments (A1111's ``ExtraNetworkParams.named``)."""
        return dict(a.split("=", 1) for a in self.args if len(a.split("=", 2)) == 2)


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetworkTag]]:
    """A1111's ``extra_networks.parse_prompt``: every ``<kind:args>`` tag is removed from the text (replaced by
    nothing, the spaces around it stay) and returned in order of appearance."""
    if not isinstance(prompt, str):
        prompt = str(prompt)
    tags: list[ExtraNetworkTag] = []

    def take(m: re.Match) -> str:
        tags.append(ExtraNetworkTag(m.group(1), tuple(m.group(2).split(":"))))
        return ""

    # No tag can end after the last '>'; leaving that tail out keeps the regex linear (each '<' without a later
    # '>' would otherwise scan to the end of the text).
    end = prompt.rfind(">") + 1
    return _EXTRA_NETWORK.sub(take, prompt[:end]) + prompt[end:], tags

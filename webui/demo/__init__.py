"""The built-in demo model: its procedural captioned dataset, the judge that scores pictures of it, and the
scripts that train the base checkpoint and its LoRA from scratch (no download anywhere)."""

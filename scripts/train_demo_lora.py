#!/usr/bin/env python3
"""Train the demo LoRA (striped fill) on top of the demo checkpoint (see webui/demo/train_lora.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webui.demo.train_lora import main  # noqa: E402

if __name__ == "__main__":
    main()

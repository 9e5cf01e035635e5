#!/usr/bin/env python3
"""Train the built-in demo checkpoint from scratch (see webui/demo/train.py for the options)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webui.demo.train import main  # noqa: E402

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train the demo canny ControlNet on top of the demo checkpoint (see webui/demo/train_controlnet.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webui.demo.train_controlnet import main  # noqa: E402

if __name__ == "__main__":
    main()

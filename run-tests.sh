#!/usr/bin/env bash
# Set up (first run only) and run the test suite offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False DO_NOT_TRACK=1
exec .venv/bin/python -m pytest "$@"

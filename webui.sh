#!/usr/bin/env bash
# Set up (first run only) and launch the web UI on http://127.0.0.1:7860. Flags go to `webui` (see --help).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh
exec .venv/bin/webui "$@"

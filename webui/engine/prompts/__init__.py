"""A1111's prompt language: parser.py (the grammar's public names, from emphasis.py, editing.py, composable.py
and extra_networks.py), encoder.py (tokens → CLIP conditioning), conditioning.py (editing schedules, AND, padding),
embeddings.py (textual inversion)."""

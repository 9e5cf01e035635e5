"""A1111's prompt language: parser.py (grammar), encoder.py (tokens → CLIP conditioning), conditioning.py
(editing schedules, AND, padding), embeddings.py (textual inversion)."""

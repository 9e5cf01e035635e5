"""Script API, callbacks, extensions and the built-in scripts (X/Y/Z plot, prompt matrix, prompts from file)."""

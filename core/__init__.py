"""The shared core under everything: the home directory, spans, examples, statistics options.

Imports nothing of Loopline (models/ is its only peer)."""

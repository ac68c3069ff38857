"""Loopline: an end-to-end TFX pipeline that closes the loop from data to serving and back."""

"""DriftDetector: a serving window against the training baseline of the model that served it."""

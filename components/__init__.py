"""Loopline's custom TFX components (component.py / executor.py / driver.py, TFX style)."""

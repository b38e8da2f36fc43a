"""Keras models, losses, metrics and the TFX Trainer module of the LCRON cascade."""

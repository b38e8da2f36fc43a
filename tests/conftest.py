"""Shared pytest setup: quiet TensorFlow and keep every test's files in its own tmp dir."""

import os

# Set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

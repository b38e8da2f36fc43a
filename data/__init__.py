"""Curated schema and small sample data shipped with the package."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent

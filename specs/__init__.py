"""Shipped model specs (YAML), one file per model."""

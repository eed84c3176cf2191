"""The epdo command line (Typer)."""

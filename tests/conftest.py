"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point $EPDO_CACHE_DIR at a fresh temporary directory for the whole test session."""
    previous = os.environ.get("EPDO_CACHE_DIR")
    os.environ["EPDO_CACHE_DIR"] = str(tmp_path_factory.mktemp("epdo-cache"))
    yield
    if previous is None:
        os.environ.pop("EPDO_CACHE_DIR", None)
    else:
        os.environ["EPDO_CACHE_DIR"] = previous

"""The Dockerfile is built once per run (a fresh venv and `pip install .`) for every test that needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.image import Image, build_image


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    yield from build_image()

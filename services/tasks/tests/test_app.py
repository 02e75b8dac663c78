"""The tasks app's start-up."""

import gc

from fastapi import FastAPI

from tasks.app import GC_YOUNG_THRESHOLD


async def test_start_up_sets_the_young_generations_threshold(app: FastAPI) -> None:
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD

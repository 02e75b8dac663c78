"""The tasks app's start-up."""

import gc

from fastapi import FastAPI

from tasks.app import GC_YOUNG_THRESHOLD


async def test_start_up_takes_its_heap_out_of_the_garbage_collectors_sight(app: FastAPI) -> None:
    # What start-up made (modules, mappers, schemas) is frozen: collections no longer walk it.
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD

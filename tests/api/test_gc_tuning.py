"""The collector set-up of long-running processes (``chatcore serve`` and ``chatcore worker``)."""

from __future__ import annotations

import gc

from chatcore_api.gc_tuning import YOUNG_THRESHOLD, freeze_startup_heap


def test_the_start_up_heap_is_frozen_and_young_collections_are_spaced() -> None:
    saved = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        young, older, oldest = gc.get_threshold()
        assert young == YOUNG_THRESHOLD > saved[0]
        assert (older, oldest) == saved[1:]  # the older generations keep their ratios
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)

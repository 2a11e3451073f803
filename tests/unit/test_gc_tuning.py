"""gc_tuning: relay serve freezes start-up objects and collects the young generation less often."""

import gc

from relay.gc_tuning import THRESHOLDS, tune_for_server


def test_thresholds_raised_and_startup_objects_frozen() -> None:
    before = gc.get_threshold()
    try:
        tune_for_server()
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

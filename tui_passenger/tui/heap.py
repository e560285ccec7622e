"""The dashboard's garbage collection: what keeps the collector's full passes from holding
the UI's loop for 100-200 ms at a moment of their choosing, maybe mid-key, at 150 workers.

Textual's widgets, styles and caches are ~100 000 objects once the first tree is drawn, and
drawing leaves self-referencing lines (a Strip caches itself), which only a full pass frees.
So what starting up left alive is frozen out of full passes (:func:`freeze`), and the
dashboard collects right after a frame is drawn, a little at a time (:func:`collect_if_due`).
"""

from __future__ import annotations

import gc

#: A full collection is due once the collector's young passes since the last full one reach
#: this: Python waits for 10, and then frees what drawing some dozen key presses left
#: (~30 000 objects, 100 ms of a held loop).
GC_AFTER = 2


def freeze() -> None:
    """Leave every object alive now out of the collector's full passes (the garbage of
    starting up is freed first, not kept frozen)."""
    gc.collect()
    gc.freeze()


def unfreeze() -> None:
    """Hand the frozen objects back to the collector (the app's own go with it)."""
    gc.unfreeze()


def collect_if_due() -> None:
    """Collect cyclic garbage now if it is due (see GC_AFTER)."""
    if gc.get_count()[2] >= GC_AFTER:
        gc.collect()

"""Started by every Python process whose PYTHONPATH holds this folder (the platform simulation's entry).

Does nothing unless ``MERLIN_KIT_SIMULATE`` is set; see :mod:`merlin_kit_simulate`.
"""

import os

if os.environ.get("MERLIN_KIT_SIMULATE", "").strip().lower() in ("windows", "macos"):
    import merlin_kit_simulate

    merlin_kit_simulate.install(os.environ["MERLIN_KIT_SIMULATE"].strip().lower())

"""Energy of one item, with codecarbon in offline mode (nothing is sent), labelled measured or estimated.

codecarbon reads the CPU's power counters where the machine exposes them (Intel
RAPL, Power Gadget, Windows EMI) and the GPU's through NVML; elsewhere it
*models* the CPU's draw from its load and its TDP. RAM is always modelled from
its size. So every figure says where it came from: ``energy_measured`` is true
only when the CPU was read from a counter, and ``energy_source`` names
codecarbon's own description of each part (``CPU(Intel Rapl)``, ``GPU``,
``CPU(Cpu Load)``, ``RAM``), with ``(estimated)`` after it when the CPU's was.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from flexharness.errors import FlexError

COUNTER_MODES = ("intel_rapl", "intel_power_gadget", "windows_emi")   # codecarbon CPU modes that read counters
COUNTRY = "USA"   # the emissions figure needs one; flexharness reports energy, not emissions


class EnergyUnavailable(FlexError):
    """--flex-energy without codecarbon installed."""


def check() -> None:
    import importlib.util

    if importlib.util.find_spec("codecarbon") is None:
        raise EnergyUnavailable("--flex-energy needs codecarbon: pip install 'flexharness[energy]'")


@contextlib.contextmanager
def measured(found: dict[str, Any]) -> Iterator[None]:
    """Fill ``found`` with the energy of the block (kWh per part, total, and how it was obtained)."""
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(country_iso_code=COUNTRY, save_to_file=False, log_level="error",
                                      measure_power_secs=1, tracking_mode="process")
    tracker.start()
    try:
        yield
    finally:
        tracker.stop()
        found.update(_fields(tracker))


def _fields(tracker: Any) -> dict[str, Any]:
    data = tracker.final_emissions_data
    parts = {type(h).__name__: h for h in getattr(tracker, "_hardware", [])}
    cpu_mode = getattr(parts.get("CPU"), "_mode", None)
    measured = cpu_mode in COUNTER_MODES
    return {"energy_kwh": float(data.energy_consumed), "energy_cpu_kwh": float(data.cpu_energy),
            "energy_gpu_kwh": float(data.gpu_energy), "energy_ram_kwh": float(data.ram_energy),
            "energy_measured": measured,
            "energy_source": ", ".join(str(h) for h in parts.values()) + ("" if measured else " (estimated)")}

"""A protocol-faithful Coinbase Exchange feed for offline runs, demos, tests and benchmarks.

``sluice simulate coinbase`` serves it standalone; tests and the ``coinbase`` source's
``simulator`` option run :class:`CoinbaseSimulator` in-process. The recorded frames it replays are
in ``data/`` with the licence notice that must stay beside them.
"""

from sluice.simulator.options import DEFAULT_SYNTHETIC_PRODUCTS, Faults, SimulatorOptions
from sluice.simulator.rest import RestOptions
from sluice.simulator.server import CoinbaseSimulator

__all__ = [
    "DEFAULT_SYNTHETIC_PRODUCTS",
    "CoinbaseSimulator",
    "Faults",
    "RestOptions",
    "SimulatorOptions",
]

"""Fleets: one spec builds every model for every device class, cached, signed, spread.

``deploycomp fleet SPEC --out DIR`` (:func:`run_fleet`): the spec (:mod:`.spec`), the
content-addressed build cache (:mod:`.cache`), the executors (:mod:`.executors`: a local
process pool, or Ray), one build as a worker runs it (:mod:`.worker`), and the index and
page it writes (:mod:`.index`).
"""

from deploycomp.fleet.run import FLEET_NOT_HELD, FleetResult, run_fleet

__all__ = ["FLEET_NOT_HELD", "FleetResult", "run_fleet"]

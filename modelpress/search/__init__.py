"""``modelpress search``: find the best compression recipe under constraints, sharing stage work between trials.

:mod:`.spec` validates a search spec (base pipeline, space, objectives, constraints, sampler, budget);
:mod:`.samplers` proposes trials (grid, random, Optuna's TPE / NSGA-II); :mod:`.execute` runs them as ordinary
pipeline runs in a local process pool or on Ray, with one content-addressed stage store
(:class:`modelpress.pipeline.cache.StageStore`) so shared prefixes run once, and resumes a killed search;
:mod:`.pareto` finds the front and the statistical ties; :mod:`.report` re-times the finalists side by side and writes
the trials table, the front, best.yaml and the summaries.
"""

from __future__ import annotations

from .spec import Constraint, Objective, Param, SearchSpec, load_search, parse_search

__all__ = ["Constraint", "Objective", "Param", "SearchSpec", "load_search", "parse_search"]

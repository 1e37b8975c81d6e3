"""Sweeps: the spec (what to run), the plan (spec -> trials), their execution on Ray, and the analysis.

Import the modules themselves (``nero_study.study.spec``, ``...engine``): this package imports nothing, so a Ray
worker importing ``nero_study.study.trainables`` pays for none of the driver's layers (pandas, the store).
"""

"""nero-study: hyperparameter-robustness studies of optimisers (Nero vs SGD, Adam, LAMB).

The library is importable with no server, database or Ray running; the service (`api`), the sweep
workers (`workers`) and the dashboards (`dashboards`) build on it.
"""

__version__ = "0.1.0"

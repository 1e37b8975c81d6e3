"""One router per resource: sweeps, trials, meta (tasks, optimizers, healthz)."""

"""Collection past one process: `scale.backend=ray` spreads the episodes of a run over collector actors on
a Ray cluster (`scale.ray_run`); the driver plans and writes, as a local run does. Ray is imported only
when that backend is used."""

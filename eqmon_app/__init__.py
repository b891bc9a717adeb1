"""The application floor: service wiring and the `eqmon` command, on top of everything else."""

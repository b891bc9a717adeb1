"""eqmon: equipment and supply monitoring for hospitals and clinics (shared core)."""

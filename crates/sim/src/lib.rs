//! Deterministic simulator: whole clusters of the real protocol cores under seeded faults, with invariant checks after every step.

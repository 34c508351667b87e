//! Replicated block storage (DRBD's role) as a sans-IO state machine: roles, protocol C, metadata, resync, split-brain detection.

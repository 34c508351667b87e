//! Vote-based quorum and the quorum disk as sans-IO state machines.

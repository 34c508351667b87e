//! Totem single-ring protocol as a sans-IO state machine: membership, total order, extended virtual synchrony, closed process groups.

//! The fence domain as a sans-IO state machine: who fences whom, in what order, and when recovery may proceed.

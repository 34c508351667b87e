//! A virtual power switch for tests and the demo: outlets that run node processes, and the fence_quorate agent that drives it.

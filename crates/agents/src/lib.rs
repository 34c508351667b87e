//! Runs external agents (FenceAgentAPI fence agents, OCF and LSB resource agents) as child processes with timeouts.

//! Driver for the quorum disk core (see `quorum::qdisk`).

//! dagr-solver (being written).

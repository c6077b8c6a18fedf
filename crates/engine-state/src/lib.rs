//! dagr-engine-state (being written).

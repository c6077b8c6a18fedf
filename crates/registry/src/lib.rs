//! dagr-registry (being written).

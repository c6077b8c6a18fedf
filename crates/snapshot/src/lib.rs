//! dagr-snapshot (being written).

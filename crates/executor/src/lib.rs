//! dagr-executor (being written).

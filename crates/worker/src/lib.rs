//! dagr-worker (being written).

//! dagr-client (being written).

//! dagr-session (being written).

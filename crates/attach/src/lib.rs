//! dagr-attach (being written).

//! dagr-gql (being written).

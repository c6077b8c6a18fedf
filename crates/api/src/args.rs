//! What the fields' `Args` structs share: the arguments several fields take alike
//! ([`PathArgs`], [`NameArgs`]) and [`null_as_default`] for arguments with a
//! schema default.
//!
//! Each field declares its arguments once, with a struct implementing [`dagr_gql::Args`] next to
//! the field's function, and its resolver reads them with `ctx.args_as()`. Object IDs and
//! sensitive arguments are declared there too but read with `ctx.loaded`, `ctx.loaded_list` and
//! `ctx.redacted`.

use dagr_gql::{Arg, Args};
use serde::{Deserialize, Deserializer};

/// Reads an argument that has a schema default as that default when a client passes an explicit
/// `null` (only for defaults equal to `T::default()`: `false`, `""`, `[]`). An omitted argument
/// arrives with its default already.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `(path: String!)`.
#[derive(Deserialize)]
pub(crate) struct PathArgs {
    pub(crate) path: String,
}

impl Args for PathArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("path", "String!")]
    }
}

/// `(name: String!)`.
#[derive(Deserialize)]
pub(crate) struct NameArgs {
    pub(crate) name: String,
}

impl Args for NameArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("name", "String!")]
    }
}

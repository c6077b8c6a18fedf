//! What the fields' `Args` structs share: the arguments several fields take alike
//! ([`PathArgs`], [`NameArgs`], [`TimestampArgs`]) and [`null_as_default`] for arguments with a
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
///
/// Like every `deserialize_with` of these structs, use it with `default`
/// (`#[serde(default, deserialize_with = "null_as_default")]`): serde only treats a plain
/// `Option` field as optional, and an argument without a schema default may be absent.
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

/// `(timestamp: Int!)`: seconds since the Unix epoch.
#[derive(Deserialize)]
pub(crate) struct TimestampArgs {
    pub(crate) timestamp: i64,
}

impl Args for TimestampArgs {
    fn arguments() -> Vec<Arg> {
        vec![Arg::new("timestamp", "Int!")]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dagr_gql::{Field, Object, Request, RequestData, Schema, Value};
    use serde_json::json;

    use super::*;
    use crate::ownership::{Owner, mode_arg, owner_arg};

    /// Arguments read through each helper, with and without schema defaults.
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "null_as_default")]
        flag: bool,
        #[serde(default, deserialize_with = "null_as_default")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "owner_arg")]
        owner: Option<Owner>,
        #[serde(default, deserialize_with = "mode_arg")]
        permissions: Option<u32>,
        #[serde(default, deserialize_with = "mode_arg")]
        mode: Option<u32>,
    }

    impl Args for Probe {
        fn arguments() -> Vec<Arg> {
            vec![
                Arg::new("flag", "Boolean").default(false),
                Arg::new("list", "[String!]").default(json!([])),
                Arg::new("owner", "String").default(""),
                Arg::new("permissions", "Int"),
                Arg::new("mode", "Int").default(256),
            ]
        }
    }

    fn probe(args: &str) -> serde_json::Value {
        let schema = Schema::build()
            .object(
                Object::new("Query").field(
                    Field::new("probe", "String!")
                        .args::<Probe>()
                        .resolve_sync(|ctx| {
                            let p: Probe = ctx.args_as()?;
                            Ok(Value::leaf(format!(
                                "{} {:?} {:?} {:?} {:?}",
                                p.flag,
                                p.list,
                                p.owner.map(|o| o.to_string()),
                                p.permissions,
                                p.mode
                            )))
                        }),
                ),
            )
            .finish()
            .map_err(|e| e.to_string());
        let schema = match schema {
            Ok(schema) => Arc::new(schema),
            Err(e) => panic!("schema: {e}"),
        };
        let request = Request::new(format!("{{ probe{args} }}"));
        futures::executor::block_on(schema.execute(request, RequestData::new())).to_json()
    }

    #[test]
    fn absent_null_and_given_arguments() {
        // Omitted: schema defaults, and `None` for the argument without one.
        assert_eq!(
            probe(""),
            json!({"data": {"probe": "false [] None None Some(256)"}})
        );
        // Explicit nulls read as the defaults.
        assert_eq!(
            probe("(flag: null, list: null, owner: null, permissions: null, mode: null)"),
            json!({"data": {"probe": "false [] None None None"}})
        );
        assert_eq!(
            probe(r#"(flag: true, list: ["a"], owner: "7", permissions: 420)"#),
            json!({"data": {"probe": "true [\"a\"] Some(\"7:7\") Some(420) Some(256)"}})
        );
    }

    #[test]
    fn bad_owners_and_modes_name_the_field_and_argument() {
        let message = |args: &str| probe(args)["errors"][0]["message"].clone();
        assert_eq!(
            message(r#"(owner: "root")"#),
            json!(
                r#"argument owner of Query.probe: owner "root" is not uid[:gid]: only numeric 32-bit ids are supported"#
            )
        );
        assert_eq!(
            message("(permissions: 4096)"),
            json!(
                "argument permissions of Query.probe: permissions 4096 are not a file mode (0 to 0o7777)"
            )
        );
        assert_eq!(
            message("(mode: -1)"),
            json!("argument mode of Query.probe: permissions -1 are not a file mode (0 to 0o7777)")
        );
    }
}

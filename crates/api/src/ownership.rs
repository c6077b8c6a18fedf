//! Who owns, and with which permission bits, what `Container` and `Directory` fields write: the
//! one parser of `owner` arguments ([`Owner`], read with [`owner_arg`]) and the one check of
//! `permissions` and `mode` arguments ([`file_mode`], read with [`mode_arg`]). Both are used as
//! `#[serde(default, deserialize_with = ...)]` on the fields' `Args` structs, so a bad value
//! fails while the arguments are read, with an error naming the field and the argument.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A numeric owner, written `uid[:gid]` (a lone `uid` is also the group, as in Dagger). Names
/// would need the target's passwd file, which file ops do not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Owner {
    /// Parses an `owner` argument; the empty string (its default) is no owner.
    pub(crate) fn parse(text: &str) -> Result<Option<Owner>, OwnershipError> {
        if text.is_empty() {
            return Ok(None);
        }
        let (uid, gid) = text.split_once(':').unwrap_or((text, text));
        let id = |s: &str| {
            // `u32::from_str` also takes a leading `+`: only digits are an id.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(OwnershipError::Owner(text.to_owned()));
            }
            s.parse::<u32>()
                .map_err(|_| OwnershipError::Owner(text.to_owned()))
        };
        Ok(Some(Owner {
            uid: id(uid)?,
            gid: id(gid)?,
        }))
    }
}

/// `uid:gid`, the owner string the solver's file ops (`MkFile`, `MkDir`, `Copy`) carry.
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// The permissions of a new file (`withNewFile`'s default) or directory (`withNewDirectory`'s).
pub(crate) const NEW_FILE_MODE: u32 = 0o644;

/// An `owner` or `permissions` argument that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OwnershipError {
    #[error("owner {0:?} is not uid[:gid]: only numeric 32-bit ids are supported")]
    Owner(String),
    #[error("permissions {0} are not a file mode (0 to 0o7777)")]
    Mode(i64),
}

/// Permission bits from an `Int` argument: refused outside `0..=0o7777` (file type bits or a
/// negative number are not permissions).
pub(crate) fn file_mode(value: i64) -> Result<u32, OwnershipError> {
    match u32::try_from(value) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(OwnershipError::Mode(value)),
    }
}

/// Reads an `owner: String = ""` argument (`null` and `""` are no owner).
pub(crate) fn owner_arg<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => Owner::parse(&text).map_err(serde::de::Error::custom),
    }
}

/// Reads a `permissions: Int` or `mode: Int` argument through [`file_mode`] (`null` is none).
pub(crate) fn mode_arg<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<i64>::deserialize(d)?
        .map(file_mode)
        .transpose()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_numeric_uid_and_optional_gid() {
        assert_eq!(Owner::parse(""), Ok(None));
        let owner = |uid, gid| Ok(Some(Owner { uid, gid }));
        assert_eq!(Owner::parse("1000:1001"), owner(1000, 1001));
        assert_eq!(Owner::parse("7"), owner(7, 7));
        assert_eq!(Owner::parse("0:0"), owner(0, 0));
        for bad in [
            "root",
            "1000:staff",
            ":1",
            "1:",
            "+1",
            "-1",
            "1:2:3",
            "4294967296",
        ] {
            assert_eq!(
                Owner::parse(bad),
                Err(OwnershipError::Owner(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            Owner::parse("x").map_err(|e| e.to_string()),
            Err(r#"owner "x" is not uid[:gid]: only numeric 32-bit ids are supported"#.to_owned())
        );
    }

    #[test]
    fn owners_print_as_uid_and_gid() {
        assert_eq!(Owner { uid: 7, gid: 7 }.to_string(), "7:7");
    }

    #[test]
    fn modes_outside_the_permission_bits_are_refused() {
        assert_eq!(file_mode(0), Ok(0));
        assert_eq!(file_mode(0o644), Ok(0o644));
        assert_eq!(file_mode(0o7777), Ok(0o7777));
        assert_eq!(file_mode(0o10000), Err(OwnershipError::Mode(0o10000)));
        assert_eq!(file_mode(-1), Err(OwnershipError::Mode(-1)));
        assert_eq!(
            file_mode(4096).map_err(|e| e.to_string()),
            Err("permissions 4096 are not a file mode (0 to 0o7777)".to_owned())
        );
    }
}

//! Who owns, and with which permission bits, what `Container` and `Directory` fields write: the
//! reader of `owner` arguments ([`owner_arg`], parsed as the solver's [`Owner`]) and the one check of
//! `permissions` and `mode` arguments ([`file_mode`], read with [`mode_arg`]). Both are used as
//! `#[serde(default, deserialize_with = ...)]` on the fields' `Args` structs, so a bad value
//! fails while the arguments are read, with an error naming the field and the argument.

pub(crate) use dagr_solver::Owner;
use serde::{Deserialize, Deserializer};

/// The permissions of a new file (`withNewFile`'s default) or directory (`withNewDirectory`'s).
pub(crate) const NEW_FILE_MODE: u32 = 0o644;

/// A `permissions` or `mode` argument that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OwnershipError {
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

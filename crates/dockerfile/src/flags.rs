//! Instruction flags (`--name=value`) checked against what each instruction accepts, with
//! BuildKit's `BFlags` rules: unknown and repeated flags are errors (except list flags such as
//! `--mount`), booleans take no value or `=true`/`=false`, strings need `=value`.

use std::collections::BTreeMap;

use crate::error::ParseErrorKind;

/// The type of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    Bool,
    String,
    /// May be given several times.
    Strings,
}

/// The flags given to an instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    strings: BTreeMap<&'static str, String>,
    bools: BTreeMap<&'static str, bool>,
    lists: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Parses `raw` (`--name[=value]` words) for `instruction`, which accepts `specs`.
    pub(crate) fn parse(
        instruction: &str,
        raw: &[String],
        specs: &[(&'static str, FlagKind)],
    ) -> Result<Flags, ParseErrorKind> {
        let mut flags = Flags::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for word in raw {
            if word == "--" {
                break;
            }
            let Some(body) = word.strip_prefix("--") else {
                return Err(ParseErrorKind::Flag(format!(
                    "arg should start with -- : {word}"
                )));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = specs.iter().find(|(n, _)| *n == name) else {
                return Err(ParseErrorKind::UnknownFlag {
                    instruction: instruction.to_ascii_uppercase(),
                    flag: format!("--{name}"),
                });
            };
            if seen.contains(&name) && kind != FlagKind::Strings {
                return Err(ParseErrorKind::Flag(format!(
                    "duplicate flag specified: --{name}"
                )));
            }
            seen.push(name);
            flags.set(name, kind, value)?;
        }
        Ok(flags)
    }

    fn set(
        &mut self,
        name: &'static str,
        kind: FlagKind,
        value: Option<&str>,
    ) -> Result<(), ParseErrorKind> {
        let missing = || ParseErrorKind::Flag(format!("missing a value on flag: --{name}"));
        match kind {
            FlagKind::Bool => {
                let b = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("") => return Err(missing()),
                    Some("false") => false,
                    Some(_) => {
                        return Err(ParseErrorKind::Flag(format!(
                            "expecting boolean value for flag --{name}, not: {}",
                            value.unwrap_or_default()
                        )));
                    }
                };
                self.bools.insert(name, b);
            }
            FlagKind::String => {
                self.strings
                    .insert(name, value.ok_or_else(missing)?.to_owned());
            }
            FlagKind::Strings => {
                self.lists
                    .entry(name)
                    .or_default()
                    .push(value.ok_or_else(missing)?.to_owned());
            }
        }
        Ok(())
    }

    /// A string flag's value, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }

    /// A boolean flag's value, if given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }

    /// Every value of a list flag, in order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[(&str, FlagKind)] = &[
        ("from", FlagKind::String),
        ("link", FlagKind::Bool),
        ("mount", FlagKind::Strings),
    ];

    fn parse(words: &[&str]) -> Result<Flags, String> {
        let raw: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        Flags::parse("copy", &raw, SPECS).map_err(|e| e.to_string())
    }

    #[test]
    fn values_by_kind() {
        let f = parse(&["--from=a", "--link", "--mount=x", "--mount=y"]).expect("flags");
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.list("mount"), vec!["x", "y"]);
        let f = parse(&["--link=FALSE"]).expect("flags");
        assert_eq!(f.bool("link"), Some(false));
        assert_eq!(f.string("from"), None);
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(&["--frm=a"]).err().as_deref(),
            Some("unknown flag --frm for COPY")
        );
        assert_eq!(
            parse(&["--from"]).err().as_deref(),
            Some("missing a value on flag: --from")
        );
        assert_eq!(
            parse(&["--from=a", "--from=b"]).err().as_deref(),
            Some("duplicate flag specified: --from")
        );
        assert_eq!(
            parse(&["--link=maybe"]).err().as_deref(),
            Some("expecting boolean value for flag --link, not: maybe")
        );
        assert_eq!(
            parse(&["--link="]).err().as_deref(),
            Some("missing a value on flag: --link")
        );
    }
}

//! `RUN --mount` specs (`type=cache,target=/x,id=y,sharing=locked`, CSV with quoting), read
//! with BuildKit's rules: keys are case-insensitive, values are expanded with the stage's
//! variables (except `from`), `ro`/`rw`/`required` may stand alone, and read-only is the
//! default except for cache and tmpfs mounts.

use dagr_solver::CacheSharing;

use crate::error::BuildErrorKind;

/// The type of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountSpec {
    pub ty: MountType,
    pub from: Option<String>,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    pub size: Option<u64>,
    pub id: String,
    pub sharing: Option<CacheSharing>,
    pub required: bool,
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

fn invalid(message: String) -> BuildErrorKind {
    BuildErrorKind::Mount(message)
}

/// Splits a CSV record: `,` separates fields, a field may be double-quoted (`""` inside is a
/// quote).
fn csv_fields(spec: &str) -> Result<Vec<String>, BuildErrorKind> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = spec.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            _ => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(invalid(format!("failed to parse csv mounts: {spec:?}")));
    }
    fields.push(field);
    Ok(fields)
}

/// The `from=` of a mount spec, unexpanded (for finding the stages and images a RUN needs).
pub(crate) fn mount_from(spec: &str) -> Option<String> {
    csv_fields(spec).ok()?.into_iter().find_map(|field| {
        let (key, value) = field.split_once('=')?;
        (key.eq_ignore_ascii_case("from") && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Parses a mount spec, expanding values with `expand`.
pub(crate) fn parse_mount(
    spec: &str,
    expand: &dyn Fn(&str) -> Result<String, BuildErrorKind>,
) -> Result<MountSpec, BuildErrorKind> {
    let mut m = MountSpec {
        ty: MountType::Bind,
        from: None,
        source: String::new(),
        target: String::new(),
        readonly: false,
        size: None,
        id: String::new(),
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut readonly_set = false;
    for field in csv_fields(spec)? {
        let Some((key, raw)) = field.split_once('=') else {
            set_flag(&mut m, &field, &mut readonly_set)?;
            continue;
        };
        let key = key.to_ascii_lowercase();
        if key == "from" {
            if raw.find('$').is_some_and(|i| i + 1 != raw.len()) {
                return Err(invalid(
                    "'from' doesn't support variable expansion, define alias stage instead"
                        .to_owned(),
                ));
            }
            m.from = Some(raw.to_owned()).filter(|f| !f.is_empty());
            continue;
        }
        let value = expand(raw)?;
        set_value(&mut m, &key, value, &mut readonly_set)?;
    }
    if !readonly_set {
        m.readonly = !matches!(m.ty, MountType::Cache | MountType::Tmpfs);
    }
    check(&m)?;
    Ok(m)
}

/// A key without value: `ro`, `rw`, `required`.
fn set_flag(m: &mut MountSpec, field: &str, readonly_set: &mut bool) -> Result<(), BuildErrorKind> {
    match field.to_ascii_lowercase().as_str() {
        "readonly" | "ro" => {
            m.readonly = true;
            *readonly_set = true;
        }
        "readwrite" | "rw" => {
            m.readonly = false;
            *readonly_set = true;
        }
        "required" if matches!(m.ty, MountType::Secret | MountType::Ssh) => m.required = true,
        "required" => {
            return Err(invalid(format!(
                "unexpected key 'required' for mount type '{}'",
                type_name(m.ty)
            )));
        }
        _ => {
            return Err(invalid(format!(
                "invalid field '{field}' must be a key=value pair"
            )));
        }
    }
    Ok(())
}

fn set_value(
    m: &mut MountSpec,
    key: &str,
    value: String,
    readonly_set: &mut bool,
) -> Result<(), BuildErrorKind> {
    let bad = |what: &str| invalid(format!("invalid value for {what}: {value}"));
    match key {
        "type" => m.ty = mount_type(&value)?,
        "source" | "src" => m.source = value,
        "target" | "dst" | "destination" => m.target = value,
        "readonly" | "ro" => {
            m.readonly = parse_bool(&value).ok_or_else(|| bad(key))?;
            *readonly_set = true;
        }
        "readwrite" | "rw" => {
            m.readonly = !parse_bool(&value).ok_or_else(|| bad(key))?;
            *readonly_set = true;
        }
        "required" if matches!(m.ty, MountType::Secret | MountType::Ssh) => {
            m.required = parse_bool(&value).ok_or_else(|| bad(key))?;
        }
        "size" if m.ty == MountType::Tmpfs => {
            m.size = Some(ram_in_bytes(&value).ok_or_else(|| bad(key))?);
        }
        "required" | "size" => {
            return Err(invalid(format!(
                "unexpected key '{key}' for mount type '{}'",
                type_name(m.ty)
            )));
        }
        "id" => m.id = value,
        "sharing" => {
            m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                "shared" => CacheSharing::Shared,
                "private" => CacheSharing::Private,
                "locked" => CacheSharing::Locked,
                _ => return Err(invalid(format!("unsupported sharing value {value:?}"))),
            });
        }
        "mode" => {
            m.mode = Some(
                u32::from_str_radix(&value, 8)
                    .map_err(|_| invalid(format!("invalid value {value} for mode")))?,
            );
        }
        "uid" => m.uid = Some(value.parse().map_err(|_| bad("uid"))?),
        "gid" => m.gid = Some(value.parse().map_err(|_| bad("gid"))?),
        "env" => m.env = Some(value),
        _ => {
            return Err(invalid(format!(
                "unexpected key '{key}' in '{key}={value}'"
            )));
        }
    }
    Ok(())
}

fn mount_type(value: &str) -> Result<MountType, BuildErrorKind> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "bind" => MountType::Bind,
        "cache" => MountType::Cache,
        "tmpfs" => MountType::Tmpfs,
        "secret" => MountType::Secret,
        "ssh" => MountType::Ssh,
        _ => return Err(BuildErrorKind::UnknownMountType(value.to_owned())),
    })
}

fn type_name(ty: MountType) -> &'static str {
    match ty {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5g`, `512kb`, `1024` (binary multiples).
fn ram_in_bytes(value: &str) -> Option<u64> {
    let number_len = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let number: f64 = value[..number_len].parse().ok()?;
    let unit = value[number_len..]
        .trim_start_matches(' ')
        .to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * scale;
    (bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// BuildKit's consistency checks of a parsed mount.
fn check(m: &MountSpec) -> Result<(), BuildErrorKind> {
    let file_info_allowed = matches!(m.ty, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(invalid(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    type_name(m.ty)
                )));
            }
        }
    }
    if m.ty == MountType::Secret {
        if m.from.is_some() {
            return Err(invalid("secret mount should not have a from".to_owned()));
        }
        if m.sharing.is_some() {
            return Err(invalid("secret mount should not define sharing".to_owned()));
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
            return Err(invalid(
                "invalid secret mount. one of source, target required".to_owned(),
            ));
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err(invalid("both source and id can't be set".to_owned()));
        }
    }
    if m.sharing.is_some() && m.ty != MountType::Cache {
        return Err(invalid(format!(
            "invalid cache sharing set for {} mount",
            type_name(m.ty)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<MountSpec, String> {
        let expand = |v: &str| Ok(v.replace("$DIR", "/expanded"));
        parse_mount(spec, &expand).map_err(|e| e.to_string())
    }

    #[test]
    fn cache_mount() {
        let m = parse("type=cache,target=$DIR,id=y,sharing=locked,mode=0755,uid=1000").expect("ok");
        assert_eq!(m.ty, MountType::Cache);
        assert_eq!(m.target, "/expanded");
        assert_eq!(m.id, "y");
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert!(!m.readonly);
    }

    #[test]
    fn defaults_and_flags() {
        let m = parse("target=/src").expect("ok");
        assert_eq!(m.ty, MountType::Bind);
        assert!(m.readonly);
        let m = parse("type=bind,source=a,target=/src,rw,from=build").expect("ok");
        assert!(!m.readonly);
        assert_eq!(m.from.as_deref(), Some("build"));
        let m = parse("type=secret,id=tok,required").expect("ok");
        assert!(m.required);
        let m = parse("type=tmpfs,target=/t,size=64m").expect("ok");
        assert_eq!(m.size, Some(64 << 20));
        let m = parse("\"type=bind\",\"target=/a,b\"").expect("ok");
        assert_eq!(m.target, "/a,b");
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("type=bogus,target=/x").err().as_deref(),
            Some("unsupported mount type \"bogus\"")
        );
        assert!(parse("type=bind,required").is_err());
        assert!(parse("type=bind,target=/x,mode=600").is_err());
        assert!(parse("type=secret,from=x,id=a").is_err());
        assert!(parse("type=bind,sharing=shared,target=/x").is_err());
        assert!(parse("type=cache,target=/x,bogus=1").is_err());
        assert!(parse("type=cache,target=/x,from=$STAGE").is_err());
        assert!(parse("type=tmpfs,target=/x,size=lots").is_err());
        assert!(parse("type=cache,target").is_err());
    }

    #[test]
    fn from_is_found_unexpanded() {
        assert_eq!(
            mount_from("type=cache,FROM=base,target=/x").as_deref(),
            Some("base")
        );
        assert_eq!(mount_from("type=cache,target=/x"), None);
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1.5KiB"), Some(1536));
        assert_eq!(ram_in_bytes("2g"), Some(2 << 30));
        assert_eq!(ram_in_bytes("x"), None);
    }
}

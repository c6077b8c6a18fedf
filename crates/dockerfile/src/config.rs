//! [`ImageConfig`]: the `config` section of an OCI image config with Docker's keys, read from a
//! base image and written in the shape BuildKit writes (empty fields left out, maps with sorted
//! keys, durations in nanoseconds). Also the value checks of the config instructions: Go
//! durations (HEALTHCHECK), port specs (EXPOSE) and signal names (STOPSIGNAL).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// `PATH` BuildKit sets when a (non-Windows) stage's config has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image's runtime configuration (the OCI config's `config` section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub user: String,
    /// `port/proto`.
    pub exposed_ports: BTreeSet<String>,
    /// `NAME=value`, in order.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub volumes: BTreeSet<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub args_escaped: bool,
    pub healthcheck: Option<Healthcheck>,
    pub on_build: Vec<String>,
    pub shell: Vec<String>,
}

/// Docker's healthcheck config; durations in nanoseconds, 0 meaning inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

impl ImageConfig {
    /// The config of an empty image (`FROM scratch`): working directory `/` and the default
    /// `PATH` (except on Windows), as BuildKit's empty image has.
    pub fn scratch(os: &str) -> ImageConfig {
        let mut config = ImageConfig {
            working_dir: "/".to_owned(),
            ..ImageConfig::default()
        };
        config.ensure_path(os);
        config
    }

    /// Reads the known keys of a `config` section; anything else is ignored.
    pub fn from_json(config: &Value) -> ImageConfig {
        let string = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let strings = |key: &str| -> Vec<String> { strings_of(config.get(key)) };
        let keys = |key: &str| -> BTreeSet<String> {
            config
                .get(key)
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let labels = config
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        ImageConfig {
            user: string("User"),
            exposed_ports: keys("ExposedPorts"),
            env: strings("Env"),
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            volumes: keys("Volumes"),
            working_dir: string("WorkingDir"),
            labels,
            stop_signal: string("StopSignal"),
            args_escaped: config
                .get("ArgsEscaped")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            healthcheck: config.get("Healthcheck").and_then(Healthcheck::from_json),
            on_build: strings("OnBuild"),
            shell: strings("Shell"),
        }
    }

    /// The `config` section as BuildKit writes it: Go's field order, empty fields left out.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let set = |m: &mut Map<String, Value>, key: &str, keys: &BTreeSet<String>| {
            if !keys.is_empty() {
                let obj: Map<String, Value> = keys.iter().map(|k| (k.clone(), json!({}))).collect();
                m.insert(key.to_owned(), Value::Object(obj));
            }
        };
        let list = |m: &mut Map<String, Value>, key: &str, items: &[String]| {
            if !items.is_empty() {
                m.insert(key.to_owned(), json!(items));
            }
        };
        let text = |m: &mut Map<String, Value>, key: &str, s: &str| {
            if !s.is_empty() {
                m.insert(key.to_owned(), json!(s));
            }
        };
        text(&mut m, "User", &self.user);
        set(&mut m, "ExposedPorts", &self.exposed_ports);
        list(&mut m, "Env", &self.env);
        list(&mut m, "Entrypoint", &self.entrypoint);
        list(&mut m, "Cmd", &self.cmd);
        set(&mut m, "Volumes", &self.volumes);
        text(&mut m, "WorkingDir", &self.working_dir);
        if !self.labels.is_empty() {
            m.insert("Labels".to_owned(), json!(self.labels));
        }
        text(&mut m, "StopSignal", &self.stop_signal);
        if self.args_escaped {
            m.insert("ArgsEscaped".to_owned(), json!(true));
        }
        if let Some(h) = &self.healthcheck {
            m.insert("Healthcheck".to_owned(), h.to_json());
        }
        list(&mut m, "OnBuild", &self.on_build);
        list(&mut m, "Shell", &self.shell);
        Value::Object(m)
    }

    /// The value of environment variable `name`.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }

    /// Sets `name`, replacing an existing value in place.
    pub fn set_env(&mut self, name: &str, value: &str) {
        let entry = format!("{name}={value}");
        let existing = self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name);
        match existing {
            Some(kv) => *kv = entry,
            None => self.env.push(entry),
        }
    }

    /// Adds the default `PATH` unless one is set (Windows is left alone, as in BuildKit).
    pub fn ensure_path(&mut self, os: &str) {
        if os != "windows" && self.env_var("PATH").is_none() {
            self.env.push(format!("PATH={DEFAULT_PATH}"));
        }
    }
}

fn strings_of(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Healthcheck {
    fn from_json(value: &Value) -> Option<Healthcheck> {
        let obj = value.as_object()?;
        let int = |key: &str| obj.get(key).and_then(Value::as_i64).unwrap_or(0);
        Some(Healthcheck {
            test: strings_of(obj.get("Test")),
            interval: int("Interval"),
            timeout: int("Timeout"),
            start_period: int("StartPeriod"),
            start_interval: int("StartInterval"),
            retries: int("Retries"),
        })
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.test.is_empty() {
            m.insert("Test".to_owned(), json!(self.test));
        }
        for (key, v) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ] {
            if v != 0 {
                m.insert(key.to_owned(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// A Go duration (`1h2m3.5s`, `300ms`, `10us`) in nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

/// EXPOSE's `[[ip:]hostport:]port[-end][/proto]` as the `port/proto` entries it exposes.
pub(crate) fn parse_ports(raw: &str) -> Result<Vec<String>, String> {
    let container = raw.rsplit(':').next().unwrap_or(raw);
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("invalid port {raw:?}: no port specified"));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_owned(),
        p @ ("tcp" | "udp" | "sctp") => p.to_owned(),
        _ => return Err(format!("invalid port {raw:?}: invalid proto: {proto}")),
    };
    let number = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .filter(|p| *p <= 65535)
            .ok_or_else(|| format!("invalid containerPort: {port}"))
    };
    let (start, end) = match port.split_once('-') {
        Some((a, b)) if a != b => (number(a)?, number(b)?),
        Some((a, _)) => (number(a)?, number(a)?),
        None => (number(port)?, number(port)?),
    };
    if end < start {
        return Err(format!("invalid port range: {port}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Whether `signal` is a signal number or a (Linux) signal name, with or without `SIG`.
pub(crate) fn is_valid_signal(signal: &str) -> bool {
    if let Ok(n) = signal.parse::<i64>() {
        return n != 0;
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    let offset = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    offset("RTMIN+", 15) || offset("RTMAX-", 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_known_keys_in_go_order() {
        let input = json!({
            "Hostname": "ignored",
            "Env": ["PATH=/bin", "A=1"],
            "Cmd": ["sh"],
            "Labels": {"b": "2", "a": "1"},
            "ExposedPorts": {"80/tcp": {}},
            "User": "app",
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000_i64},
        });
        let config = ImageConfig::from_json(&input);
        assert_eq!(config.env_var("A"), Some("1"));
        let out = config.to_json();
        assert_eq!(
            serde_json::to_string(&out).expect("json"),
            r#"{"User":"app","ExposedPorts":{"80/tcp":{}},"Env":["PATH=/bin","A=1"],"Cmd":["sh"],"Labels":{"a":"1","b":"2"},"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000}}"#
        );
    }

    #[test]
    fn scratch_has_path_and_root_workdir() {
        let c = ImageConfig::scratch("linux");
        assert_eq!(c.env, vec![format!("PATH={DEFAULT_PATH}")]);
        assert_eq!(c.working_dir, "/");
        assert!(ImageConfig::scratch("windows").env.is_empty());
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.env, vec!["A=3", "B=2"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_ports("80"), Ok(vec!["80/tcp".to_owned()]));
        assert_eq!(parse_ports("53/UDP"), Ok(vec!["53/udp".to_owned()]));
        assert_eq!(
            parse_ports("8000-8002/tcp"),
            Ok(vec![
                "8000/tcp".into(),
                "8001/tcp".into(),
                "8002/tcp".into()
            ])
        );
        assert_eq!(
            parse_ports("127.0.0.1:80:8080"),
            Ok(vec!["8080/tcp".into()])
        );
        assert!(parse_ports("80/xyz").is_err());
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("90-80").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "SIGKILL"] {
            assert!(is_valid_signal(ok), "{ok}");
        }
        for bad in ["0", "SIGFOO", "RTMIN+16", ""] {
            assert!(!is_valid_signal(bad), "{bad}");
        }
    }
}

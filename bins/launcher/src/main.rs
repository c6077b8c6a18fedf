//! `dagr-launcher`: dagr's container launcher, with runc's command line for the commands dagr's
//! executor gives (`run`, `kill`, `delete`, `list`, `--version`, and the global `--root`, `--log`
//! and `--log-format json`). See the `dagr-launcher` crate.
//!
//! It stays single-threaded: the launcher forks the container's init with `clone(2)`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
dagr-launcher: runs OCI bundles as containers (the subset of an OCI runtime dagr's executor uses)

Usage: dagr-launcher [--root DIR] [--log FILE] [--log-format json] COMMAND

Commands:
  run --bundle DIR [--pid-file FILE] [--no-new-keyring] [--wait-in-cgroup PATH] ID
                         run the bundle's process in the foreground; exits with its status
                         (128 + signal when it was killed). With --wait-in-cgroup: first make
                         the cgroup PATH (the one the bundle's spec names), move into it, write
                         one byte (P) to stdout and wait for one byte on stdin; then read the
                         bundle and run it, the container born in that cgroup (end of stdin
                         instead: exit, not started; the cgroup stays for the caller to remove)
  kill [--all] ID [SIGNAL]
                         send SIGNAL (a name such as TERM or KILL, or a number; default TERM)
                         to the init (which takes its whole pid namespace with it)
  delete [--force] ID    remove a container (with --force, kill it first)
  list [-q]              the containers under the state root
  --version              print the version

Options:
  --root DIR             state root (default /run/dagr-launcher)
  --log FILE             append errors to FILE (as JSON lines with --log-format json)
";

struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    json: bool,
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut global = Global {
        root: PathBuf::from("/run/dagr-launcher"),
        log: None,
        json: false,
    };
    // Global options come before the command.
    while let Some(first) = args.first().cloned() {
        let take = |args: &mut Vec<String>| -> Option<String> {
            args.remove(0);
            (!args.is_empty()).then(|| args.remove(0))
        };
        match first.as_str() {
            "--root" => match take(&mut args) {
                Some(v) => global.root = PathBuf::from(v),
                None => return usage_error("--root needs a directory"),
            },
            "--log" => match take(&mut args) {
                Some(v) => global.log = Some(PathBuf::from(v)),
                None => return usage_error("--log needs a file"),
            },
            "--log-format" => match take(&mut args).as_deref() {
                Some("json") => global.json = true,
                Some("text") => global.json = false,
                _ => return usage_error("--log-format is json or text"),
            },
            _ => break,
        }
    }
    let Some(command) = args.first().cloned() else {
        return usage_error("no command");
    };
    let rest = &args[1..];
    match command.as_str() {
        "--version" | "-v" | "version" => {
            println!("dagr-launcher version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "run" => run(&global, rest),
        "kill" => {
            // `--all`: killing the init ends its whole pid namespace anyway.
            let rest: Vec<&String> = rest.iter().filter(|a| !a.starts_with('-')).collect();
            let (Some(id), signal) = (rest.first().copied(), rest.get(1).copied()) else {
                return usage_error("kill needs a container id");
            };
            let Some(signal) = signal_number(signal.map_or("TERM", String::as_str)) else {
                return usage_error("unknown signal");
            };
            report(&global, dagr_launcher::kill(&global.root, id, signal))
        }
        "delete" => {
            let force = rest.iter().any(|a| a == "--force" || a == "-f");
            let Some(id) = rest.iter().find(|a| !a.starts_with('-')) else {
                return usage_error("delete needs a container id");
            };
            report(&global, dagr_launcher::delete(&global.root, id, force))
        }
        "list" | "ls" => match dagr_launcher::list(&global.root) {
            Ok(ids) => {
                for id in ids {
                    println!("{id}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&global, &e.to_string()),
        },
        other => usage_error(&format!("unknown command {other}")),
    }
}

fn run(global: &Global, rest: &[String]) -> ExitCode {
    let mut bundle = None;
    let mut pid_file = None;
    let mut wait_in_cgroup = None;
    let mut id = None;
    let mut i = 0;
    while i < rest.len() {
        match rest[i].as_str() {
            "--bundle" | "-b" => {
                i += 1;
                bundle = rest.get(i).map(PathBuf::from);
            }
            "--pid-file" => {
                i += 1;
                pid_file = rest.get(i).map(PathBuf::from);
            }
            "--wait-in-cgroup" => {
                i += 1;
                match rest.get(i) {
                    Some(path) => wait_in_cgroup = Some(PathBuf::from(path)),
                    None => return usage_error("--wait-in-cgroup needs a cgroup path"),
                }
            }
            // The launcher never creates session keyrings.
            "--no-new-keyring" => {}
            flag if flag.starts_with('-') => {
                return usage_error(&format!("unknown run flag {flag}"));
            }
            name => id = Some(name.to_owned()),
        }
        i += 1;
    }
    let (Some(bundle), Some(id)) = (bundle, id) else {
        return usage_error("run needs --bundle DIR and a container id");
    };
    let options = dagr_launcher::RunOptions {
        root: global.root.clone(),
        bundle,
        id,
        pid_file,
        wait_in_cgroup,
    };
    match dagr_launcher::run(&options) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(255)),
        // Its caller let it go unused: nothing to report.
        Err(dagr_launcher::LaunchError::NotStarted { .. }) => ExitCode::SUCCESS,
        Err(e) => fail(global, &e.to_string()),
    }
}

fn report(global: &Global, result: Result<(), dagr_launcher::StateError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(global, &e.to_string()),
    }
}

/// Prints the error on stderr and appends it to the log (runc's JSON log lines when asked).
fn fail(global: &Global, message: &str) -> ExitCode {
    eprintln!("dagr-launcher: {message}");
    if let Some(log) = &global.log {
        write_log(log, global.json, message);
    }
    ExitCode::FAILURE
}

fn write_log(path: &Path, json: bool, message: &str) {
    let line = if json {
        serde_json::json!({"level": "error", "msg": message}).to_string()
    } else {
        format!("error: {message}")
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("dagr-launcher: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// A signal by name (`TERM`, `SIGTERM`) or number.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "WINCH" => 28,
        _ => return None,
    })
}

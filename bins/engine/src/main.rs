//! `dagr-engine`: the composition root. Parses the command line ([`config::Cli`]), then builds and
//! serves the engine ([`app::App`]) or runs a subcommand (`schema`, `dial-stdio`); a failure is
//! printed on stderr and exits with status 1.

mod app;
mod cache;
mod config;
mod dial_stdio;
mod export;
mod gc;
mod group_commit;
mod grpc;
mod host;
mod metrics;
mod nested;
mod query;
mod remote_cache;
mod routes;
mod run_dir;
mod server;
mod stack;
mod telemetry;
mod tls;
mod watchdog;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use app::App;
use config::{Cli, Command, Config, ListenAddr, default_socket, default_state_dir};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file (the CLI's engine.log) stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(dagr_api::ENGINE_THREAD_STACK)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Some(Command::DialStdio { addr, probe }) => {
            let addr =
                addr.unwrap_or_else(|| ListenAddr::Unix(default_socket(&default_state_dir())));
            runtime.block_on(dial_stdio::run(addr, probe))
        }
        Some(Command::Schema) => {
            print!("{}", dagr_api::schema()?.sdl());
            Ok(())
        }
        Some(Command::Watchdog(args)) => watchdog::run(&args.runc, &args.runc_root),
        None => {
            let config = Config::from(cli.serve);
            config.check()?;
            runtime.block_on(async {
                App::build(config).await?.serve().await;
                Ok(())
            })
        }
    }
}

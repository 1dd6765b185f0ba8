//! `mqtt pub` and `mqtt sub`: the command-line tools, with the flags
//! Mosquitto users type every day (the README's table compares every
//! mosquitto_pub / mosquitto_sub flag with ours).
//!
//! Both reconnect when the link drops (backoff, session resumed with `-c`,
//! in-flight messages resent) unless `--exit-on-disconnect` is given.

mod args;
mod connect;
mod errors;
mod fernet_cli;
mod output;
mod publish;
mod subscribe;
mod trace;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Err(e) = cli.command.apply_url() {
        eprintln!("Error: {e}");
        return ExitCode::FAILURE;
    }
    let Some(common) = cli.command.common() else {
        return ExitCode::from(fernet_cli::keygen());
    };
    let version = match connect::version(common) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = common.quiet;
    // The library's own diagnostics, for whoever sets RUST_LOG (-d is the
    // packet trace).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Pub(a) => publish::run_pub(a).await,
            Cmd::Sub(a) => subscribe::run_sub(a).await,
            Cmd::Keygen => Ok(fernet_cli::keygen()),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !quiet {
                eprintln!("Error: {}", errors::explain(&e, version));
            }
            ExitCode::from(errors::exit_code(&e, version))
        }
    }
}

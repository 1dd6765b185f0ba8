//! `mqtt pub` and `mqtt sub`: the command-line tools, with the flags
//! Mosquitto users type every day.
//!
//! Exit codes: 0 success; 1 usage or network error; for a refused
//! connection, the CONNACK code (3.1.1: 1 to 5, e.g. 4 bad user name or
//! password, 5 not authorised; 5.0: the reason code, e.g. 134 / 135);
//! 27 when `-W` runs out (as mosquitto_sub).

mod args;
mod connect;
mod errors;
mod output;
mod publish;
mod subscribe;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd};
use connect::parse_version;
use errors::exit_code;
use publish::run_pub;
use subscribe::run_sub;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.command {
        Cmd::Pub(a) => &a.common,
        Cmd::Sub(a) => &a.common,
    };
    // A refused MQTT 5 connection exits with the reason code itself.
    let v5 = parse_version(&common.version).is_ok_and(|v| v.is_v5());
    if common.debug {
        tracing_subscriber::fmt()
            .with_env_filter("mqtt_client=debug")
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
            Cmd::Pub(a) => run_pub(a).await,
            Cmd::Sub(a) => run_sub(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(exit_code(&e, v5))
        }
    }
}

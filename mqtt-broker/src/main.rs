//! `mqtt-broker`: run the broker from the command line.
//!
//! With no arguments it listens on 127.0.0.1:1883 and lets anonymous clients
//! in, like `mosquitto`. `-p` changes the port, `-c` reads a TOML file, `-v`
//! logs every packet. SIGHUP re-reads the TLS certificates and the password
//! and ACL files without dropping connected clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqtt_broker::{Broker, BrokerHandle, Config, ListenerConfig};
use tracing_subscriber::EnvFilter;

/// An MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Parser, Debug)]
#[command(name = "mqtt-broker", version, about)]
struct Args {
    /// Configuration file (TOML); see mqtt-broker.example.toml.
    #[arg(short = 'c', long = "config-file")]
    config: Option<PathBuf>,
    /// Listen on this port (on 127.0.0.1 unless the config file names
    /// listeners, in which case it replaces the port of each).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Log every packet in and out.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Add or update a user in a password file (like mosquitto_passwd).
    /// New entries are Argon2id; existing $7$ (PBKDF2-SHA512) entries of
    /// other users are kept as they are.
    Passwd {
        /// Create a new file, replacing an existing one.
        #[arg(short = 'c')]
        create: bool,
        /// Take the password from the command line (batch mode).
        #[arg(short = 'b')]
        batch: bool,
        /// Delete the user.
        #[arg(short = 'D')]
        delete: bool,
        /// The password file.
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password, with -b.
        password: Option<String>,
    },
}

fn passwd(cmd: Command) -> ExitCode {
    let Command::Passwd {
        create,
        batch,
        delete,
        file,
        user,
        password,
    } = cmd;
    let result = if delete {
        mqtt_broker::auth::delete_user(&file, &user)
    } else {
        let password = match (batch, password) {
            (true, Some(p)) => Ok(p),
            (true, None) => Err("-b needs the password as the last argument".to_string()),
            (false, Some(_)) => Err("give the password only with -b".to_string()),
            (false, None) => read_new_password(),
        };
        password.and_then(|p| mqtt_broker::auth::set_password(&file, &user, p.as_bytes(), create))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-broker passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks twice on the terminal, or reads one line when input is not one.
fn read_new_password() -> Result<String, String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let second = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
    if first != second {
        return Err("passwords do not match".into());
    }
    Ok(first)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cmd) = args.command {
        return passwd(cmd);
    }
    let default_filter = if args.verbose {
        "info,mqtt_broker::packets=debug"
    } else {
        "info"
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mqtt-broker: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(port) = args.port {
        if args.config.is_none() {
            config.listeners = vec![ListenerConfig::new(SocketAddr::from((
                [127, 0, 0, 1],
                port,
            )))];
        } else {
            for l in &mut config.listeners {
                l.bind.set_port(port);
            }
        }
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("mqtt-broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("mqtt-broker {} running", env!("CARGO_PKG_VERSION"));
        wait_for_signal(&broker).await;
        tracing::info!("shutting down");
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Waits for SIGINT or SIGTERM; on each SIGHUP reloads the TLS
/// certificates and the password and ACL files meanwhile.
async fn wait_for_signal(broker: &BrokerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    broker.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = broker;
        let _ = tokio::signal::ctrl_c().await;
    }
}

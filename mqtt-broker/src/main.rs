//! `mqtt-broker`: run the broker from the command line.
//!
//! With no arguments it listens on 127.0.0.1:1883 and lets anonymous clients
//! in, like `mosquitto`. `-p` changes the port, `-c` reads a TOML file or a
//! Mosquitto `mosquitto.conf` (told apart by content), `--check` validates
//! one and prints the effective settings, `-v` logs every packet. SIGHUP
//! re-reads the TLS certificates and the password and ACL files without
//! dropping connected clients. A configuration that cannot be used is one
//! line on standard error and exit status 1, before anything starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqtt_broker::{Broker, BrokerHandle, Config, ListenerConfig};

/// mimalloc, not the system's malloc: glibc's heap keeps the holes that
/// connecting clients leave between the long-lived state of idle ones (1.3
/// KB each in RSS for 0.9 KB in use, when a connection kept more); with
/// mimalloc's size classes, which the long-lived parts are sized to, about
/// 660 B (`benches/LOAD.md`). Its v2
/// without transparent huge pages: with them, start-up RSS is 10 MB more.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run by a worker thread as it goes idle: takes back the blocks of its
/// memory that other threads freed. mimalloc leaves those on a list that
/// only the owning thread empties, when it next allocates of their size;
/// a thread that has gone quiet never does. A connection's task is often
/// freed on the other worker than the one that made it (work stealing;
/// parking), so after a storm of clients, pages that were all free stayed
/// in RSS: 800 bytes per idle connection, 725 with this (and with one
/// worker thread). At most once every 10 ms per thread, as `mi_collect`
/// visits every page of the thread's heap.
#[cfg(feature = "mimalloc")]
fn collect_freed_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|t| now.duration_since(t) < Duration::from_millis(10))
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: a call into the allocator that takes nothing but a flag: no
    // pointer, no state of ours.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// An MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Parser, Debug)]
#[command(name = "mqtt-broker", version, about)]
struct Args {
    /// Configuration file: TOML (see mqtt-broker.example.toml) or
    /// Mosquitto's mosquitto.conf format.
    #[arg(short = 'c', long = "config-file")]
    config: Option<PathBuf>,
    /// Check the configuration (and the files it names), print the
    /// effective settings as TOML, and exit: 0 if usable, 1 if not.
    #[arg(long)]
    check: bool,
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
    /// Make TLS certificates: a CA (ca.crt, ca.key), a server certificate
    /// naming this host (server.crt, server.key) and, with --client, client
    /// certificates (client-NAME.crt/.key). Example for a Raspberry Pi:
    /// certs --host raspberrypi.local --ip 192.168.1.20
    Certs {
        /// A DNS name clients use for the broker (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// An IP address clients use for the broker (repeatable).
        #[arg(long = "ip", value_name = "ADDRESS")]
        ips: Vec<std::net::IpAddr>,
        /// Also make a client certificate with this Common Name (repeatable;
        /// the user name with use_identity_as_username).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Days the server and client certificates are valid (the CA: 10 years).
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

fn certs(cmd: Command) -> ExitCode {
    let Command::Certs {
        hosts,
        ips,
        clients,
        dir,
        days,
        force,
    } = cmd
    else {
        return ExitCode::FAILURE;
    };
    let req = mqtt_broker::certs::CertsRequest {
        dir,
        hosts,
        ips,
        clients,
        days,
        force,
    };
    match mqtt_broker::certs::generate(&req) {
        Ok(files) => {
            for f in &files {
                println!("wrote {}", f.display());
            }
            let d = req.dir.display();
            println!(
                "\nIn the broker's configuration:\n  [[listeners]]\n  bind = \"0.0.0.0:8883\"\n  \
                 [listeners.tls]\n  cert_file = \"{d}/server.crt\"\n  key_file = \"{d}/server.key\"\n\
                 Clients trust {d}/ca.crt (mosquitto_sub --cafile, mqtt sub --cafile). Keep ca.key \
                 off the broker if you can: it signs new certificates."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt-broker certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn passwd(cmd: Command) -> ExitCode {
    let Command::Passwd {
        create,
        batch,
        delete,
        file,
        user,
        password,
    } = cmd
    else {
        return certs(cmd);
    };
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
    let (mut config, warnings) = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("mqtt-broker: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => (Config::default(), Vec::new()),
    };
    if let Some(port) = args.port {
        if args.config.is_none() {
            config.listeners = vec![ListenerConfig::local_only(port)];
        } else {
            for l in &mut config.listeners {
                l.bind.set_port(port);
            }
        }
    }
    if args.check {
        for w in &warnings {
            eprintln!("mqtt-broker: warning: {w}");
        }
        if let Err(e) = config.validate().and_then(|()| config.check_files()) {
            eprintln!("mqtt-broker: {e}");
            return ExitCode::FAILURE;
        }
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    // The files the configuration names are read before anything starts,
    // so a wrong path never leaves half a broker (a store opened, ports
    // bound) behind its error.
    if let Err(e) = config.check_files() {
        eprintln!("mqtt-broker: {e}");
        return ExitCode::FAILURE;
    }
    mqtt_broker::logging::init(config.log_format, args.verbose);
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    #[cfg(feature = "mimalloc")]
    builder.on_thread_park(collect_freed_memory);
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Written before anything listens (a pid file that cannot be written
    // stops the start like any other bad setting); removed when dropped,
    // also when the start fails.
    let pid_file = match mqtt_broker::PidFile::create(config.pid_file.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mqtt-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
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
    });
    drop(pid_file);
    code
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

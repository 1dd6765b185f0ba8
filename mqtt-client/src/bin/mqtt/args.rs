//! The command line: every flag of `mqtt pub` and `mqtt sub`, parsed by
//! clap, spelled as mosquitto_pub / mosquitto_sub 2.0 spell them (the README
//! has the full table of theirs against ours).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mqtt",
    version,
    about = "MQTT command-line client: `mqtt pub` and `mqtt sub` take mosquitto_pub / mosquitto_sub's flags",
    // -h is the host, as in mosquitto; --help prints help.
    disable_help_flag = true
)]
pub struct Cli {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help, global = true)]
    pub help: Option<bool>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Publish a message (like mosquitto_pub).
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
    /// Print a new Fernet key (for --fernet-key-file), like Python's
    /// `Fernet.generate_key()`.
    Keygen,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Broker URL instead of -h -p -u -P -t, like mosquitto_pub -L:
    /// mqtt(s)://[user[:password]@]host[:port]/topic, or
    /// ws(s)://[user[:password]@]host[:port]/path/topic (MQTT over
    /// WebSocket; the first path segment is the WebSocket path).
    #[arg(short = 'L', long = "url")]
    pub url: Option<String>,
    /// WebSocket request path, set from a ws:// or wss:// -L URL.
    #[arg(skip)]
    pub ws_path: Option<String>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    pub host: String,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Bind the outgoing socket to this local address.
    #[arg(short = 'A', value_name = "BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Client identifier (default: mqtt-pub-PID / mqtt-sub-PID).
    #[arg(short = 'i', long = "id", conflicts_with = "id_prefix")]
    pub id: Option<String>,
    /// Client identifier prefix; the process id is appended.
    #[arg(short = 'I', long = "id-prefix")]
    pub id_prefix: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (3.1.1 needs a user name with it).
    #[arg(short = 'P', long)]
    pub pw: Option<String>,
    /// Keep alive in seconds (0 turns it off).
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Protocol version: mqttv5 / 5, mqttv311 / 311, mqttv31 / 31.
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    pub version: String,
    /// QoS (0, 1 or 2).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u8,
    /// Disable clean session / clean start (keep the session).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub no_clean: bool,
    /// MQTT 5 session expiry interval in seconds; -1 or ∞ never expires
    /// (`-c` defaults it to never).
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        allow_hyphen_values = true
    )]
    pub session_expiry: Option<String>,
    /// Most QoS 1/2 messages in flight at once.
    #[arg(short = 'M', long = "max-inflight", default_value_t = 20)]
    pub max_inflight: u16,
    /// Will topic.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Will payload.
    #[arg(long)]
    pub will_payload: Option<String>,
    /// Will QoS.
    #[arg(long, default_value_t = 0)]
    pub will_qos: u8,
    /// Retain the will.
    #[arg(long)]
    pub will_retain: bool,
    /// CA certificate file (PEM); enables TLS.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// A directory of CA certificates (PEM files); enables TLS.
    #[arg(long)]
    pub capath: Option<PathBuf>,
    /// ALPN protocol to offer in the TLS handshake (e.g. mqtt); may repeat.
    #[arg(long = "tls-alpn", action = clap::ArgAction::Append)]
    pub tls_alpn: Vec<String>,
    /// Use the operating system's CA certificates; enables TLS.
    #[arg(long)]
    pub tls_use_os_certs: bool,
    /// Client certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Do not verify the server certificate or host name.
    #[arg(long)]
    pub insecure: bool,
    /// MQTT 5 property: -D COMMAND NAME VALUE, or -D COMMAND user-property
    /// KEY VALUE. Commands: connect, publish, will. Implies -V 5, as in
    /// mosquitto.
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = clap::ArgAction::Append)]
    pub properties: Vec<String>,
    /// Print every MQTT packet sent and received, as mosquitto's -d does.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Do not print runtime errors (nor the lines about a lost link).
    #[arg(long)]
    pub quiet: bool,
    /// Accepted for mosquitto compatibility: Nagle's algorithm is always
    /// off.
    #[arg(long)]
    pub nodelay: bool,
    /// Exit on the first lost connection instead of reconnecting (by
    /// default the tools reconnect with backoff and resume the session).
    #[arg(long)]
    pub exit_on_disconnect: bool,
}

#[derive(Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic to publish to (or the path of an -L URL).
    #[arg(short = 't', long, required_unless_present = "url")]
    pub topic: Option<String>,
    /// Message payload.
    #[arg(short = 'm', long, group = "payload")]
    pub message: Option<String>,
    /// Send the contents of a file as the payload.
    #[arg(short = 'f', long, group = "payload")]
    pub file: Option<PathBuf>,
    /// Send each line of standard input as a message.
    #[arg(short = 'l', long = "stdin-line", group = "payload")]
    pub lines: bool,
    /// Send a zero-length message.
    #[arg(short = 'n', long = "null-message", group = "payload")]
    pub null: bool,
    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file", group = "payload")]
    pub stdin: bool,
    /// Retain the message.
    #[arg(short = 'r', long)]
    pub retain: bool,
    /// With -m, -f, -s or -n: publish the message this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: u64,
    /// With --repeat: seconds (may be fractional) between one message being
    /// delivered and the next being sent.
    #[arg(long, default_value_t = 0.0)]
    pub repeat_delay: f64,
    /// MQTT 5 Response Topic (as mosquitto_rr's -e).
    #[arg(short = 'e', long = "response-topic")]
    pub response_topic: Option<String>,
    #[command(flatten)]
    pub fernet: crate::fernet_cli::FernetArgs,
}

#[derive(Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long, required_unless_present_any = ["unsubscribe", "url"])]
    pub topic: Vec<String>,
    /// Do not print messages whose topic matches this filter (repeatable).
    #[arg(short = 'T', long = "filter-out")]
    pub filter_out: Vec<String>,
    /// Unsubscribe from this filter after subscribing (repeatable); useful
    /// with -c to drop a subscription of a kept session.
    #[arg(short = 'U', long = "unsubscribe")]
    pub unsubscribe: Vec<String>,
    /// Exit after printing this many messages.
    #[arg(short = 'C', long)]
    pub count: Option<u64>,
    /// Exit after this many seconds (exit code 27).
    #[arg(short = 'W', long)]
    pub timeout: Option<u64>,
    /// Print the topic before the payload.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Do not print retained (stale) messages.
    #[arg(short = 'R', long)]
    pub no_retained: bool,
    /// Print only retained messages; exit at the first message that is not.
    #[arg(long)]
    pub retained_only: bool,
    /// Clear each retained message received (publish an empty retained
    /// message to its topic), except those filtered out with -T.
    #[arg(long)]
    pub remove_retained: bool,
    /// Exit once subscribed.
    #[arg(short = 'E', long)]
    pub exit_after_sub: bool,
    /// Do not print a newline after each message.
    #[arg(short = 'N', long)]
    pub no_newline: bool,
    /// Output format, as mosquitto_sub's -F: %t topic, %p payload, %q QoS,
    /// %r retain, %l length, %m message id, %x/%X hex payload, %I ISO time,
    /// %U Unix time, %j/%J JSON, %C %D %E %F %P %R %S %A MQTT 5 properties,
    /// @X strftime, \n \t \0 \e escapes; widths and - / 0 flags.
    #[arg(short = 'F', long)]
    pub format: Option<String>,
    /// Indent the JSON of %j / %J.
    #[arg(long)]
    pub pretty: bool,
    /// Print only this percentage of messages, chosen at random.
    #[arg(long, value_name = "CHANCE")]
    pub random_filter: Option<f64>,
    /// MQTT 5 no-local: do not receive own messages.
    #[arg(long)]
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    #[arg(long)]
    pub retain_as_published: bool,
    /// MQTT 5 retain handling (0, 1 or 2).
    #[arg(long, default_value_t = 0)]
    pub retain_handling: u8,
    /// MQTT 5 subscription identifier.
    #[arg(long)]
    pub subscription_identifier: Option<u32>,
    #[command(flatten)]
    pub fernet: crate::fernet_cli::FernetArgs,
    /// With --fernet-key-file: refuse tokens older than SECS.
    #[arg(long, value_name = "SECS", requires = "fernet_key_file")]
    pub fernet_ttl: Option<u64>,
}

impl Cmd {
    /// Applies an `-L` URL (host, port, credentials, TLS, WebSocket path,
    /// topic), then checks that there is a topic.
    pub fn apply_url(&mut self) -> Result<(), mqtt_client::ClientError> {
        let no_topic = || {
            mqtt_client::ClientError::Invalid("no topic: give -t or put it in the -L URL".into())
        };
        match self {
            Cmd::Pub(a) => {
                let mut topics = Vec::new();
                crate::connect::apply_url(&mut a.common, &mut topics)?;
                if a.topic.is_none() {
                    a.topic = topics.pop();
                }
                a.topic.as_ref().map(|_| ()).ok_or_else(no_topic)
            }
            Cmd::Sub(a) => {
                crate::connect::apply_url(&mut a.common, &mut a.topic)?;
                if a.topic.is_empty() && a.unsubscribe.is_empty() {
                    return Err(no_topic());
                }
                Ok(())
            }
            Cmd::Keygen => Ok(()),
        }
    }

    /// The connection flags; `keygen` has none.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Cmd::Pub(a) => Some(&a.common),
            Cmd::Sub(a) => Some(&a.common),
            Cmd::Keygen => None,
        }
    }
}

//! The command line: every flag of `mqtt pub` and `mqtt sub`, parsed by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mqtt",
    version,
    about = "MQTT command-line client",
    disable_help_flag = true
)]
pub struct Cli {
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
}

#[derive(Args, Clone)]
pub struct Common {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    pub host: String,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Client identifier (default: a generated one).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub pw: Option<String>,
    /// Keep alive in seconds.
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Protocol version: 5 or 311 (also mqttv5, mqttv311).
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    pub version: String,
    /// QoS (0, 1 or 2).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u8,
    /// Disable clean session / clean start (keep the session).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub no_clean: bool,
    /// MQTT 5 session expiry interval in seconds (`-c` defaults it to forever).
    #[arg(short = 'x', long = "session-expiry-interval")]
    pub session_expiry: Option<u32>,
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
    /// MQTT 5 property: -D COMMAND NAME VALUE [VALUE], e.g.
    /// `-D publish user-property key value`, `-D connect user-property k v`,
    /// `-D publish content-type text/plain`.
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = clap::ArgAction::Append)]
    pub properties: Vec<String>,
    /// Print debug messages.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

#[derive(Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    pub topic: String,
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
}

#[derive(Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long, required = true)]
    pub topic: Vec<String>,
    /// Exit after this many messages.
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
    /// Exit once subscribed.
    #[arg(short = 'E', long)]
    pub exit_after_sub: bool,
    /// Do not print a newline after each message.
    #[arg(short = 'N', long)]
    pub no_newline: bool,
    /// Output format: %t topic, %p payload, %q QoS, %r retain, %l length,
    /// %x hex payload, %I ISO time, %U Unix time, %j JSON, %% percent;
    /// \n and \t escapes.
    #[arg(short = 'F', long)]
    pub format: Option<String>,
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
}

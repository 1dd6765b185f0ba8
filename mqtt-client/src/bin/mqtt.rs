//! `mqtt pub` and `mqtt sub`: the command-line tools, with the flags
//! Mosquitto users type every day.
//!
//! Exit codes: 0 success; 1 usage or network error; for a refused
//! connection, the CONNACK code (3.1.1: 1 to 5, e.g. 4 bad user name or
//! password, 5 not authorised; 5.0: the reason code, e.g. 134 / 135);
//! 27 when `-W` runs out (as mosquitto_sub).

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use mqtt_client::{
    Client, ClientError, ConnectOptions, Message, OutgoingMessage, ProtocolVersion,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubscriptionOptions, TlsOptions, Will,
};

const EXIT_TIMEOUT: u8 = 27;

#[derive(Parser)]
#[command(
    name = "mqtt",
    version,
    about = "MQTT command-line client",
    disable_help_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish a message (like mosquitto_pub).
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Broker URL instead of -h -p -u -P -t, like mosquitto_pub -L:
    /// mqtt(s)://[user[:password]@]host[:port]/topic, or
    /// ws(s)://[user[:password]@]host[:port]/path/topic (MQTT over
    /// WebSocket; the first path segment is the WebSocket path).
    #[arg(short = 'L', long = "url")]
    url: Option<String>,
    /// WebSocket request path, set from a ws:// or wss:// -L URL.
    #[arg(skip)]
    ws_path: Option<String>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    host: String,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Client identifier (default: a generated one).
    #[arg(short = 'i', long = "id")]
    id: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pw: Option<String>,
    /// Keep alive in seconds.
    #[arg(short = 'k', long, default_value_t = 60)]
    keepalive: u16,
    /// Protocol version: 5 or 311 (also mqttv5, mqttv311).
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    version: String,
    /// QoS (0, 1 or 2).
    #[arg(short = 'q', long, default_value_t = 0)]
    qos: u8,
    /// Disable clean session / clean start (keep the session).
    #[arg(short = 'c', long = "disable-clean-session")]
    no_clean: bool,
    /// MQTT 5 session expiry interval in seconds (`-c` defaults it to forever).
    #[arg(short = 'x', long = "session-expiry-interval")]
    session_expiry: Option<u32>,
    /// Will topic.
    #[arg(long)]
    will_topic: Option<String>,
    /// Will payload.
    #[arg(long)]
    will_payload: Option<String>,
    /// Will QoS.
    #[arg(long, default_value_t = 0)]
    will_qos: u8,
    /// Retain the will.
    #[arg(long)]
    will_retain: bool,
    /// CA certificate file (PEM); enables TLS.
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// Use the operating system's CA certificates; enables TLS.
    #[arg(long)]
    tls_use_os_certs: bool,
    /// Client certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Do not verify the server certificate or host name.
    #[arg(long)]
    insecure: bool,
    /// MQTT 5 property: -D COMMAND NAME VALUE [VALUE], e.g.
    /// `-D publish user-property key value`, `-D connect user-property k v`,
    /// `-D publish content-type text/plain`.
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = clap::ArgAction::Append)]
    properties: Vec<String>,
    /// Print debug messages.
    #[arg(short = 'd', long)]
    debug: bool,
}

#[derive(Args)]
struct PubArgs {
    #[command(flatten)]
    common: Common,
    /// Topic to publish to.
    #[arg(short = 't', long, required_unless_present = "url")]
    topic: Option<String>,
    /// Message payload.
    #[arg(short = 'm', long, group = "payload")]
    message: Option<String>,
    /// Send the contents of a file as the payload.
    #[arg(short = 'f', long, group = "payload")]
    file: Option<PathBuf>,
    /// Send each line of standard input as a message.
    #[arg(short = 'l', long = "stdin-line", group = "payload")]
    lines: bool,
    /// Send a zero-length message.
    #[arg(short = 'n', long = "null-message", group = "payload")]
    null: bool,
    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file", group = "payload")]
    stdin: bool,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

#[derive(Args)]
struct SubArgs {
    #[command(flatten)]
    common: Common,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long, required_unless_present = "url")]
    topic: Vec<String>,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit after this many seconds (exit code 27).
    #[arg(short = 'W', long)]
    timeout: Option<u64>,
    /// Print the topic before the payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Do not print retained (stale) messages.
    #[arg(short = 'R', long)]
    no_retained: bool,
    /// Exit once subscribed.
    #[arg(short = 'E', long)]
    exit_after_sub: bool,
    /// Do not print a newline after each message.
    #[arg(short = 'N', long)]
    no_newline: bool,
    /// Output format: %t topic, %p payload, %q QoS, %r retain, %l length,
    /// %x hex payload, %I ISO time, %U Unix time, %j JSON, %% percent;
    /// \n and \t escapes.
    #[arg(short = 'F', long)]
    format: Option<String>,
    /// MQTT 5 no-local: do not receive own messages.
    #[arg(long)]
    no_local: bool,
    /// MQTT 5 retain-as-published.
    #[arg(long)]
    retain_as_published: bool,
    /// MQTT 5 retain handling (0, 1 or 2).
    #[arg(long, default_value_t = 0)]
    retain_handling: u8,
    /// MQTT 5 subscription identifier.
    #[arg(long)]
    subscription_identifier: Option<u32>,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let url = match &mut cli.command {
        Cmd::Pub(a) => {
            let mut topics = Vec::new();
            let r = apply_url(&mut a.common, &mut topics);
            if a.topic.is_none() {
                a.topic = topics.pop();
            }
            r.and_then(|()| match a.topic {
                Some(_) => Ok(()),
                None => Err(ClientError::Invalid(
                    "no topic: give -t or put it in the -L URL".into(),
                )),
            })
        }
        Cmd::Sub(a) => apply_url(&mut a.common, &mut a.topic).and_then(|()| {
            if a.topic.is_empty() {
                Err(ClientError::Invalid(
                    "no topic: give -t or put it in the -L URL".into(),
                ))
            } else {
                Ok(())
            }
        }),
    };
    if let Err(e) = url {
        eprintln!("Error: {e}");
        return ExitCode::FAILURE;
    }
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

fn exit_code(e: &ClientError, v5: bool) -> u8 {
    match e {
        ClientError::Refused(r) if v5 => r.as_u8(),
        ClientError::Refused(r) => r.to_v3_connack().filter(|c| *c != 0).unwrap_or(r.as_u8()),
        ClientError::Timeout => EXIT_TIMEOUT,
        _ => 1,
    }
}

fn parse_qos(q: u8) -> Result<QoS, ClientError> {
    QoS::from_u8(q).map_err(|_| ClientError::Invalid(format!("QoS must be 0, 1 or 2, not {q}")))
}

fn parse_version(v: &str) -> Result<ProtocolVersion, ClientError> {
    match v {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        other => Err(ClientError::Invalid(format!(
            "unsupported protocol version {other:?} (use 5 or 311)"
        ))),
    }
}

/// Properties given with -D for `command` (connect, publish, subscribe...).
fn properties_for<'a>(
    raw: &'a [String],
    command: &str,
) -> Result<Vec<(&'a str, Vec<&'a str>)>, ClientError> {
    // clap appends the values of every -D in order; split them back into
    // groups: COMMAND NAME VALUE [VALUE] where only user-property has two.
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let cmd = raw[i].as_str();
        let name = raw.get(i + 1).map_or("", String::as_str);
        let n = if name == "user-property" { 2 } else { 1 };
        let values: Vec<&str> = raw
            .get(i + 2..i + 2 + n)
            .ok_or_else(|| ClientError::Invalid(format!("-D {cmd} {name} needs {n} value(s)")))?
            .iter()
            .map(String::as_str)
            .collect();
        if cmd.eq_ignore_ascii_case(command) {
            out.push((name, values));
        }
        i += 2 + n;
    }
    Ok(out)
}

fn publish_properties(raw: &[String]) -> Result<PublishProperties, ClientError> {
    let mut p = PublishProperties::default();
    for (name, v) in properties_for(raw, "publish")? {
        match name {
            "user-property" => p.user_properties.push((v[0].to_owned(), v[1].to_owned())),
            "content-type" => p.content_type = Some(v[0].to_owned()),
            "response-topic" => p.response_topic = Some(v[0].to_owned()),
            "correlation-data" => p.correlation_data = Some(Bytes::from(v[0].to_owned())),
            "message-expiry-interval" => {
                p.message_expiry_secs = Some(v[0].parse().map_err(|_| {
                    ClientError::Invalid("message-expiry-interval needs a number".into())
                })?)
            }
            "payload-format-indicator" => p.payload_format_utf8 = Some(v[0] != "0"),
            other => {
                return Err(ClientError::Invalid(format!(
                    "unsupported publish property {other}"
                )))
            }
        }
    }
    Ok(p)
}

/// `-L URL`, like mosquitto_pub -L: fills host, port, credentials, TLS and
/// topic as -h -p -u -P -t would. `mqtt(s)://host[:port]/topic`; for
/// `ws(s)://host[:port]/path/topic` the first path segment is the WebSocket
/// request path (`ws://host:9001/mqtt/room_temp`: path `/mqtt`, topic
/// `room_temp`), since brokers other than ours and Mosquitto want one.
/// A topic in the URL is added to `topics`.
fn apply_url(c: &mut Common, topics: &mut Vec<String>) -> Result<(), ClientError> {
    let Some(url) = c.url.clone() else {
        return Ok(());
    };
    let u = mqtt_client::BrokerUrl::parse(&url)?;
    let path = u.path.strip_prefix('/').unwrap_or(&u.path);
    let topic = if u.websocket {
        let (segment, topic) = path.split_once('/').unwrap_or((path, ""));
        c.ws_path = Some(format!("/{segment}"));
        topic
    } else {
        path
    };
    if !topic.is_empty() {
        topics.push(topic.to_string());
    }
    c.host = u.host;
    c.port = Some(u.port);
    if u.username.is_some() {
        c.username = u.username;
        c.pw = u.password;
    }
    // mqtts:// and wss:// mean TLS: with no CA given, the system's roots.
    if u.tls && c.cafile.is_none() && !c.insecure && c.cert.is_none() {
        c.tls_use_os_certs = true;
    }
    Ok(())
}

fn options(c: &Common, default_prefix: &str) -> Result<ConnectOptions, ClientError> {
    let version = parse_version(&c.version)?;
    let tls =
        (c.cafile.is_some() || c.tls_use_os_certs || c.insecure || c.cert.is_some()).then(|| {
            TlsOptions {
                ca_file: c.cafile.clone(),
                cert_file: c.cert.clone(),
                key_file: c.key.clone(),
                insecure: c.insecure,
                server_name: None,
            }
        });
    let port = c.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    let mut o = ConnectOptions::new(c.host.clone(), port).version(version);
    o.client_id = match &c.id {
        Some(id) => id.clone(),
        None => format!("{default_prefix}-{}", std::process::id()),
    };
    o.clean_start = !c.no_clean;
    o.session_expiry_secs = c
        .session_expiry
        .unwrap_or(if c.no_clean { u32::MAX } else { 0 });
    o.keep_alive = Duration::from_secs(u64::from(c.keepalive));
    o.username = c.username.clone();
    o.password = c.pw.clone().map(Bytes::from);
    o.tls = tls;
    o.websocket = c
        .ws_path
        .clone()
        .map(|path| mqtt_client::WebSocketOptions { path });
    // A command-line tool reports a lost connection instead of retrying.
    o.reconnect = false;
    for (name, v) in properties_for(&c.properties, "connect")? {
        if name == "user-property" {
            o.user_properties.push((v[0].to_owned(), v[1].to_owned()));
        }
    }
    if let Some(topic) = &c.will_topic {
        o.will = Some(Will {
            topic: topic.clone(),
            payload: Bytes::from(c.will_payload.clone().unwrap_or_default()),
            qos: parse_qos(c.will_qos)?,
            retain: c.will_retain,
            delay_secs: None,
            properties: PublishProperties::default(),
        });
    }
    Ok(o)
}

async fn run_pub(a: PubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let props = publish_properties(&a.common.properties)?;
    let opts = options(&a.common, "mqtt-pub")?;
    let payload = if let Some(m) = &a.message {
        Some(Bytes::from(m.clone()))
    } else if let Some(f) = &a.file {
        Some(Bytes::from(std::fs::read(f).map_err(|e| {
            ClientError::Invalid(format!("{}: {e}", f.display()))
        })?))
    } else if a.null {
        Some(Bytes::new())
    } else if a.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| ClientError::Invalid(format!("stdin: {e}")))?;
        Some(Bytes::from(buf))
    } else if a.lines {
        None
    } else {
        return Err(ClientError::Invalid(
            "give a payload with -m, -f, -s, -l or -n".into(),
        ));
    };
    let (client, _messages) = Client::connect(opts).await?;
    let message = |payload: Bytes| OutgoingMessage {
        topic: a.topic.clone().unwrap_or_default(),
        payload,
        qos,
        retain: a.retain,
        properties: props.clone(),
    };
    match payload {
        Some(p) => report(client.publish_message(message(p)).await)?,
        None => {
            // One message per line, pipelined, each confirmed before exit.
            let mut tokens = Vec::new();
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| ClientError::Invalid(format!("stdin: {e}")))?;
                tokens.push(client.start_publish(message(Bytes::from(line))).await?);
            }
            for t in tokens {
                report(t.await)?;
            }
        }
    }
    client.disconnect().await?;
    Ok(0)
}

fn report(r: Result<ReasonCode, ClientError>) -> Result<(), ClientError> {
    match r {
        Ok(ReasonCode::NoMatchingSubscribers) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn run_sub(a: SubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let opts = options(&a.common, "mqtt-sub")?;
    let retain_handling = match a.retain_handling {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        n => {
            return Err(ClientError::Invalid(format!(
                "retain handling must be 0, 1 or 2, not {n}"
            )))
        }
    };
    let sub_options = SubscriptionOptions {
        qos,
        no_local: a.no_local,
        retain_as_published: a.retain_as_published,
        retain_handling,
    };
    let work = async {
        let (client, mut messages) = Client::connect(opts).await?;
        let filters = a.topic.iter().map(|t| (t.clone(), sub_options)).collect();
        let codes = client
            .subscribe_with(filters, a.subscription_identifier)
            .await?;
        for (t, c) in a.topic.iter().zip(&codes) {
            if c.is_error() {
                eprintln!(
                    "Subscription to {t} refused: {}",
                    mqtt_client::reason_text(*c)
                );
            }
        }
        if codes.iter().all(|c| c.is_error()) {
            return Err(ClientError::Rejected(codes[0]));
        }
        if a.exit_after_sub {
            client.disconnect().await?;
            return Ok(0);
        }
        let mut seen = 0u64;
        let stdout = std::io::stdout();
        while let Some(msg) = messages.recv().await {
            if a.no_retained && msg.retain {
                continue;
            }
            let mut out = stdout.lock();
            let _ = out.write_all(&render(&a, &msg));
            let _ = out.flush();
            seen += 1;
            if a.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
        client.disconnect().await?;
        Ok(0)
    };
    match a.timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("Timed out");
                Ok(EXIT_TIMEOUT)
            }
        },
        None => work.await,
    }
}

fn render(a: &SubArgs, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match &a.format {
        Some(f) => format_message(f, msg, &mut out),
        None => {
            if a.verbose {
                out.extend_from_slice(msg.topic.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&msg.payload);
        }
    }
    if !a.no_newline {
        out.push(b'\n');
    }
    out
}

fn format_message(f: &str, msg: &Message, out: &mut Vec<u8>) {
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.extend_from_slice(msg.topic.as_bytes()),
                Some('p') => out.extend_from_slice(&msg.payload),
                Some('q') => out.extend_from_slice(msg.qos.as_u8().to_string().as_bytes()),
                Some('r') => out.push(if msg.retain { b'1' } else { b'0' }),
                Some('l') => out.extend_from_slice(msg.payload.len().to_string().as_bytes()),
                Some('x') => out.extend(
                    msg.payload
                        .iter()
                        .flat_map(|b| format!("{b:02x}").into_bytes()),
                ),
                Some('X') => out.extend(
                    msg.payload
                        .iter()
                        .flat_map(|b| format!("{b:02X}").into_bytes()),
                ),
                Some('U') => out.extend_from_slice(unix_time().as_bytes()),
                Some('I') => out.extend_from_slice(iso_time().as_bytes()),
                Some('j') => out.extend_from_slice(json(msg).as_bytes()),
                Some('%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'\\'),
            },
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

fn unix_time() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, computed without a date crate.
fn iso_time() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One JSON object per message, as mosquitto_sub's `%j`: a UTF-8 payload as
/// a string, any other payload as hex in `payloadhex`.
fn json(msg: &Message) -> String {
    let payload = match msg.payload_str() {
        Some(s) => format!("\"payload\":{}", json_str(s)),
        None => format!(
            "\"payloadhex\":\"{}\"",
            msg.payload
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    };
    let mut props = String::new();
    if !msg.properties.user_properties.is_empty() {
        let list: Vec<String> = msg
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| format!("{{{}:{}}}", json_str(k), json_str(v)))
            .collect();
        props = format!(",\"user-properties\":[{}]", list.join(","));
    }
    format!(
        "{{\"tst\":\"{}\",\"topic\":{},\"qos\":{},\"retain\":{},\"payloadlen\":{},{}{}}}",
        iso_time(),
        json_str(&msg.topic),
        msg.qos.as_u8(),
        u8::from(msg.retain),
        msg.payload.len(),
        payload,
        props
    )
}

//! Running the `mqtt` tool as built, against a broker on 127.0.0.1.

use std::process::{Output, Stdio};

use mqtt_broker::BrokerHandle;
use tokio::process::{Child, Command};

use super::{until, within};

/// `mqtt SUBCOMMAND -h 127.0.0.1 -p PORT ARGS...`, stdout and stderr piped.
pub fn mqtt(broker_port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqtt"));
    c.args(&args[..1])
        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs `mqtt` to completion.
pub async fn run(port: u16, args: &[&str]) -> Output {
    within(&format!("mqtt {args:?}"), mqtt(port, args).output())
        .await
        .unwrap()
}

/// Waits for a started `mqtt` to exit.
pub async fn finish(child: Child) -> Output {
    within("mqtt to exit", child.wait_with_output())
        .await
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `mqtt sub` and waits until the broker holds its subscriptions
/// (`n` more than before).
pub async fn sub_n(broker: &BrokerHandle, n: usize, args: &[&str]) -> Child {
    let before = broker.subscription_count();
    let child = mqtt(broker.local_addr().port(), args).spawn().unwrap();
    until("mqtt sub subscribed", || {
        broker.subscription_count() >= before + n
    })
    .await;
    child
}

/// Starts `mqtt sub` with one filter and waits until it is subscribed.
pub async fn sub(broker: &BrokerHandle, args: &[&str]) -> Child {
    sub_n(broker, 1, args).await
}

/// Asserts a successful exit.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        text(&o.stderr)
    );
}

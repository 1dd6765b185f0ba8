//! Authentication and authorization over TCP: a password file in
//! Mosquitto's format (Argon2id entries written by the broker, a `$7$`
//! PBKDF2-SHA512 entry computed here the way mosquitto_passwd does, a `$6$`
//! entry), listeners that refuse anonymous clients, an ACL file in
//! Mosquitto's format (users, anonymous rules, patterns, deny), and reloading
//! both files. Runs for 3.1.1 and 5.0.

mod common;

use std::net::SocketAddr;

use common::*;
use mqtt_broker::{BrokerHandle, Config, ListenerConfig};
use mqtt_codec::{
    LastWill, Packet, Properties, ProtocolVersion, PubResp, QoS, ReasonCode, SubscribeFilter,
    SubscriptionOptions,
};
use sha2::Digest;

const ALICE_PW: &[u8] = b"alice-argon2";
const MOSQ_PW: &[u8] = b"mosq-pbkdf2";
const OLD_PW: &[u8] = b"old-sha512";

/// A listener on 127.0.0.1, ephemeral port, with `allow_anonymous` set.
fn listener(allow_anonymous: bool) -> ListenerConfig {
    ListenerConfig {
        allow_anonymous: Some(allow_anonymous),
        ..Config::ephemeral().listeners.remove(0)
    }
}

/// The hash part of a `$6$` line (mosquitto_passwd 1.x): SHA-512 of the
/// password then the salt.
fn sha512_hash(password: &[u8], salt: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut d = sha2::Sha512::new();
    d.update(password);
    d.update(salt);
    format!("$6${}${}", b64.encode(salt), b64.encode(d.finalize()))
}

/// Writes the password file for the authentication tests: `alice` with an
/// Argon2id entry written by the broker's own `set_password`, `mosq` with a
/// `$7$` entry as mosquitto_passwd 2.x writes it, and `old` with a `$6$`
/// entry of mosquitto_passwd 1.x.
fn write_password_file(path: &std::path::Path) {
    mqtt_broker::auth::set_password(path, "alice", ALICE_PW, true).unwrap();
    let mut text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
    text.push_str(&format!(
        "mosq:{}\n",
        mosquitto_pbkdf2_hash(MOSQ_PW, b"0123456789ab")
    ));
    text.push_str(&format!("old:{}\n", sha512_hash(OLD_PW, b"saltsalt")));
    std::fs::write(path, text).unwrap();
}

/// A broker that refuses anonymous clients and checks the password file.
async fn auth_broker(dir: &ScratchDir) -> BrokerHandle {
    let passwords = dir.file("passwd");
    write_password_file(&passwords);
    broker_with(Config {
        listeners: vec![listener(false)],
        password_file: Some(passwords),
        ..Config::ephemeral()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_refused_when_the_listener_forbids_them() {
    let dir = ScratchDir::new("anon");
    let broker = auth_broker(&dir).await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        let got = RawClient::connect_refused(addr, login_packet(v, "anon", None, None)).await;
        // 3.1.1: return code 5, not authorized; 5.0: 0x87 Not authorized.
        assert_refusal(&got, v, 0x05, 0x87);
    }
    assert_eq!(broker.stats().auth_failures.get(), 2);
    assert_eq!(broker.stats().clients_connected.get(), 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unknown_users_are_refused_and_counted() {
    let dir = ScratchDir::new("wrong");
    let broker = auth_broker(&dir).await;
    let addr = broker.local_addr();
    let attempts: [(&str, Option<&[u8]>); 6] = [
        // Argon2id entry, wrong password.
        ("alice", Some(b"alice-argon")),
        // $7$ entry, wrong password (the right one with a changed case).
        ("mosq", Some(b"MOSQ-pbkdf2")),
        // $6$ entry, wrong password.
        ("old", Some(b"old-sha51")),
        // Someone else's password.
        ("alice", Some(MOSQ_PW)),
        // A user that does not exist, with a password that does.
        ("mallory", Some(ALICE_PW)),
        // A user name without a password.
        ("mosq", None),
    ];
    let mut refused = 0;
    for v in V3_AND_V5 {
        for (i, (user, password)) in attempts.iter().enumerate() {
            // MQTT 3.1.1 has no password without a user name, but a user
            // name without a password is fine in both.
            let id = format!("c{i}");
            let got =
                RawClient::connect_refused(addr, login_packet(v, &id, Some(*user), *password))
                    .await;
            // 3.1.1: return code 4, bad user name or password; 5.0: 0x86.
            assert_refusal(&got, v, 0x04, 0x86);
            refused += 1;
        }
    }
    assert_eq!(broker.stats().auth_failures.get(), refused);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_passwords_are_accepted_for_argon2_pbkdf2_and_sha512_entries() {
    let dir = ScratchDir::new("right");
    let broker = auth_broker(&dir).await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        for (user, password) in [("alice", ALICE_PW), ("mosq", MOSQ_PW), ("old", OLD_PW)] {
            let mut c =
                RawClient::connect_with(addr, login_packet(v, user, Some(user), Some(password)))
                    .await;
            // A working session: it subscribes, publishes and receives.
            c.subscribe(1, "auth/ok", QoS::AtMostOnce).await;
            c.send(&Packet::Publish(publish(
                "auth/ok",
                user.as_bytes(),
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
            c.expect_publish(publish(
                "auth/ok",
                user.as_bytes(),
                QoS::AtMostOnce,
                0,
                false,
            ))
            .await;
            c.disconnect_and_wait().await;
        }
    }
    assert_eq!(broker.stats().auth_failures.get(), 0);
    broker.shutdown().await;
}

/// With anonymous clients allowed, a client that does give a user name must
/// still give that user's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_is_checked_even_where_anonymous_clients_are_allowed() {
    let dir = ScratchDir::new("anon-ok");
    let passwords = dir.file("passwd");
    write_password_file(&passwords);
    let broker = broker_with(Config {
        listeners: vec![listener(true)],
        password_file: Some(passwords),
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        RawClient::connect_with(addr, login_packet(v, "anon", None, None))
            .await
            .disconnect_and_wait()
            .await;
        let got =
            RawClient::connect_refused(addr, login_packet(v, "m", Some("mosq"), Some(b"wrong")))
                .await;
        assert_refusal(&got, v, 0x04, 0x86);
    }
    assert_eq!(broker.stats().auth_failures.get(), 2);
    broker.shutdown().await;
}

/// `BrokerHandle::reload` re-reads the password file: afterwards new
/// connections need the new password and the old one is refused; a client
/// connected before keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_puts_a_rewritten_password_file_in_force() {
    let dir = ScratchDir::new("reload");
    let passwords = dir.file("passwd");
    std::fs::write(
        &passwords,
        format!(
            "mosq:{}\n",
            mosquitto_pbkdf2_hash(b"first", b"aaaaaaaaaaaa")
        ),
    )
    .unwrap();
    let broker = broker_with(Config {
        listeners: vec![listener(false)],
        password_file: Some(passwords.clone()),
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut before = RawClient::connect_with(
        addr,
        login_packet(v, "before", Some("mosq"), Some(b"first")),
    )
    .await;

    // Rewritten in place (as an editor would) and with a second user.
    std::fs::write(
        &passwords,
        format!(
            "mosq:{}\nnew:{}\n",
            mosquitto_pbkdf2_hash(b"second", b"bbbbbbbbbbbb"),
            mosquitto_pbkdf2_hash(b"new-pw", b"cccccccccccc")
        ),
    )
    .unwrap();
    // Not in force before the reload.
    RawClient::connect_with(addr, login_packet(v, "c1", Some("mosq"), Some(b"first")))
        .await
        .disconnect_and_wait()
        .await;
    broker.reload();
    let got =
        RawClient::connect_refused(addr, login_packet(v, "c2", Some("mosq"), Some(b"first"))).await;
    assert_refusal(&got, v, 0x04, 0x86);
    RawClient::connect_with(addr, login_packet(v, "c3", Some("mosq"), Some(b"second")))
        .await
        .disconnect_and_wait()
        .await;
    RawClient::connect_with(addr, login_packet(v, "c4", Some("new"), Some(b"new-pw")))
        .await
        .disconnect_and_wait()
        .await;

    // A password file that cannot be read keeps the one in force.
    std::fs::remove_file(&passwords).unwrap();
    broker.reload();
    RawClient::connect_with(addr, login_packet(v, "c5", Some("mosq"), Some(b"second")))
        .await
        .disconnect_and_wait()
        .await;

    // The client connected before the reloads was not touched.
    before.expect_nothing_pending().await;
    before.disconnect_and_wait().await;
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------
// ACL

/// Rules before the first `user` line are for anonymous clients; `admin`
/// may do anything and observes; `alice` owns `home/` except its secrets;
/// `carol` has no rules of her own, only the patterns.
const ACL: &str = "\
# Anonymous clients.
topic read public/#
topic write public/anon-inbox

user alice
topic readwrite home/#
topic deny home/secret/#
topic read news/+

user admin
topic readwrite #

user carol

# Every client: its own device tree and its own user inbox / outbox.
pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern write users/%u/outbox
";

/// A broker with the ACL above, anonymous clients allowed, and `$7$`
/// passwords (cheap to check) `<user>-pw` for alice, admin and carol.
async fn acl_broker(dir: &ScratchDir) -> BrokerHandle {
    let passwords = dir.file("passwd");
    let mut text = String::new();
    for user in ["alice", "admin", "carol"] {
        let pw = format!("{user}-pw");
        text.push_str(&format!(
            "{user}:{}\n",
            mosquitto_pbkdf2_hash(pw.as_bytes(), b"saltysaltysa")
        ));
    }
    std::fs::write(&passwords, text).unwrap();
    let acl = dir.file("acl");
    std::fs::write(&acl, ACL).unwrap();
    broker_with(Config {
        listeners: vec![listener(true)],
        password_file: Some(passwords),
        acl_file: Some(acl),
        ..Config::ephemeral()
    })
    .await
}

/// Connects `user` (password `<user>-pw`) with client id `id`.
async fn login(addr: SocketAddr, v: ProtocolVersion, id: &str, user: &str) -> RawClient {
    let pw = format!("{user}-pw");
    RawClient::connect_with(addr, login_packet(v, id, Some(user), Some(pw.as_bytes()))).await
}

/// `admin`, subscribed to everything at QoS 0: sees every message that is
/// published.
async fn observer(addr: SocketAddr) -> RawClient {
    let mut admin = login(addr, ProtocolVersion::V5, "observer", "admin").await;
    admin.subscribe(1, "#", QoS::AtMostOnce).await;
    admin
}

fn filters<'a>(list: &[&'a str]) -> Vec<SubscribeFilter<'a>> {
    list.iter()
        .map(|&filter| SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        })
        .collect()
}

/// The SUBACK failure as a client of `v` sees it: the MQTT 5 code, or 0x80
/// for 3.1.1, which has only the one.
fn failure(v: ProtocolVersion, v5: ReasonCode) -> ReasonCode {
    if v.is_v5() {
        v5
    } else {
        ReasonCode::UnspecifiedError
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_where_the_acl_denies_is_refused_with_0x87_and_not_delivered() {
    let dir = ScratchDir::new("acl-pub5");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    let mut alice = login(addr, ProtocolVersion::V5, "alice", "alice").await;

    // `public/#` is only readable for anonymous clients: nothing for alice.
    let r = alice
        .publish_flow(publish("public/news", b"1", QoS::AtLeastOnce, 1, false))
        .await;
    assert_eq!(r, ReasonCode::NotAuthorized, "QoS 1 PUBACK");
    let r = alice
        .publish_flow(publish("public/news", b"2", QoS::ExactlyOnce, 2, false))
        .await;
    assert_eq!(r, ReasonCode::NotAuthorized, "QoS 2 PUBREC");
    // QoS 0: dropped without a word.
    alice
        .send(&Packet::Publish(publish(
            "public/news",
            b"3",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;
    // The refused QoS 2 exchange is over: its identifier is free again.
    let r = alice
        .publish_flow(publish("home/hall", b"ok", QoS::ExactlyOnce, 2, false))
        .await;
    assert_eq!(r, ReasonCode::Success);

    // Only the allowed message reached the observer.
    obs.expect_publish(publish("home/hall", b"ok", QoS::AtMostOnce, 0, false))
        .await;
    obs.expect_nothing_pending().await;
    alice.expect_nothing_pending().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_publish_where_the_acl_denies_is_acknowledged_but_not_delivered() {
    let dir = ScratchDir::new("acl-pub3");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    let mut alice = login(addr, ProtocolVersion::V3_1_1, "alice", "alice").await;

    // 3.1.1 cannot say no: a normal PUBACK, and the message goes nowhere.
    alice
        .send(&Packet::Publish(publish(
            "public/news",
            b"1",
            QoS::AtLeastOnce,
            1,
            false,
        )))
        .await;
    alice.expect_bytes(&[0x40, 0x02, 0x00, 0x01]).await;
    // QoS 2: a normal PUBREC, and PUBREL is completed.
    alice
        .send(&Packet::Publish(publish(
            "public/news",
            b"2",
            QoS::ExactlyOnce,
            2,
            false,
        )))
        .await;
    alice.expect_bytes(&[0x50, 0x02, 0x00, 0x02]).await;
    alice.send(&Packet::PubRel(PubResp::new(pid_(2)))).await;
    alice.expect_bytes(&[0x70, 0x02, 0x00, 0x02]).await;
    alice
        .send(&Packet::Publish(publish(
            "public/news",
            b"3",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;
    alice
        .send(&Packet::Publish(publish(
            "home/hall",
            b"ok",
            QoS::AtLeastOnce,
            3,
            false,
        )))
        .await;
    alice.expect_bytes(&[0x40, 0x02, 0x00, 0x03]).await;

    obs.expect_publish(publish("home/hall", b"ok", QoS::AtMostOnce, 0, false))
        .await;
    obs.expect_nothing_pending().await;
    alice.expect_nothing_pending().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_the_acl_does_not_cover_are_refused() {
    let dir = ScratchDir::new("acl-sub");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        let mut alice = login(addr, v, "alice", "alice").await;
        let codes = alice
            .subscribe_many(
                1,
                &filters(&[
                    "home/#",
                    "home/secret/#",
                    "#",
                    "news/+",
                    "news/#",
                    "public/#",
                    "home/+/temp",
                ]),
                &[],
            )
            .await;
        let no = failure(v, ReasonCode::NotAuthorized);
        let ok = ReasonCode::Success;
        assert_eq!(codes, [ok, no, no, ok, no, no, ok], "{v:?}");
        // The exact bytes: 0x87 per refusal in 5.0, 0x80 in 3.1.1.
        alice
            .send(&Packet::Subscribe(mqtt_codec::Subscribe {
                pid: pid_(2),
                properties: Properties::EMPTY,
                filters: mqtt_codec::List::from_slice(&filters(&["#", "home/#"])),
            }))
            .await;
        if v.is_v5() {
            alice
                .expect_bytes(&[0x90, 0x05, 0x00, 0x02, 0x00, 0x87, 0x00])
                .await;
        } else {
            alice
                .expect_bytes(&[0x90, 0x04, 0x00, 0x02, 0x80, 0x00])
                .await;
        }
        alice.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// A `deny` rule wins over a broader grant for publishing, subscribing and
/// receiving: alice may use `home/#` but not `home/secret/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_beats_a_broader_grant() {
    let dir = ScratchDir::new("acl-deny");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    let mut alice = login(addr, ProtocolVersion::V5, "alice", "alice").await;
    alice.subscribe(1, "home/#", QoS::AtMostOnce).await;

    let r = alice
        .publish_flow(publish("home/secret/key", b"k", QoS::AtLeastOnce, 1, false))
        .await;
    assert_eq!(r, ReasonCode::NotAuthorized);
    let codes = alice
        .subscribe_many(2, &filters(&["home/secret/#", "home/secret/key"]), &[])
        .await;
    assert_eq!(
        codes,
        [ReasonCode::NotAuthorized, ReasonCode::NotAuthorized]
    );

    // admin may write there; alice's `home/#` matches but she may not read.
    let before = broker.stats().acl_denied.get();
    let mut admin = login(addr, ProtocolVersion::V5, "admin", "admin").await;
    for topic in ["home/secret/key", "home/kitchen"] {
        let r = admin
            .publish_flow(publish(topic, b"x", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(r, ReasonCode::Success, "{topic}");
    }
    alice
        .expect_publish(publish("home/kitchen", b"x", QoS::AtMostOnce, 0, false))
        .await;
    alice.expect_nothing_pending().await;
    assert_eq!(broker.stats().acl_denied.get(), before + 1);
    obs.expect_publish(publish("home/secret/key", b"x", QoS::AtMostOnce, 0, false))
        .await;
    obs.expect_publish(publish("home/kitchen", b"x", QoS::AtMostOnce, 0, false))
        .await;
    broker.shutdown().await;
}

/// A retained message on a topic the subscriber may not read is not sent on
/// a wildcard subscription that matches it; the others are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_filtered_by_read_access() {
    let dir = ScratchDir::new("acl-retained");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut admin = login(addr, ProtocolVersion::V5, "admin", "admin").await;
    for (topic, payload) in [
        ("home/secret/key", &b"hidden"[..]),
        ("home/kitchen/temp", b"21"),
        ("home/secret/code", b"hidden"),
    ] {
        // No subscriber yet: accepted, with 0x10 No matching subscribers.
        let r = admin
            .publish_flow(publish(topic, payload, QoS::AtLeastOnce, 1, true))
            .await;
        assert_eq!(r, ReasonCode::NoMatchingSubscribers, "{topic}");
    }
    assert_eq!(broker.retained_count(), 3);
    for v in V3_AND_V5 {
        let before = broker.stats().acl_denied.get();
        let mut alice = login(addr, v, "alice", "alice").await;
        alice.subscribe(1, "home/#", QoS::AtLeastOnce).await;
        let pid = alice
            .expect_publish(publish(
                "home/kitchen/temp",
                b"21",
                QoS::AtLeastOnce,
                1,
                true,
            ))
            .await;
        alice
            .send(&Packet::PubAck(PubResp::new(pid.unwrap())))
            .await;
        alice.expect_nothing_pending().await;
        assert_eq!(broker.stats().acl_denied.get(), before + 2, "{v:?}");
        // A filter that names no secret but matches one: the same.
        alice.subscribe(2, "home/+/key", QoS::AtMostOnce).await;
        alice.expect_nothing_pending().await;
        alice.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// `pattern` rules with `%u` (the user name) and `%c` (the client id): carol
/// has no rules of her own, only the patterns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_substitute_the_user_name_and_the_client_id() {
    let dir = ScratchDir::new("acl-pattern");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    for v in V3_AND_V5 {
        let mut carol = login(addr, v, "dev-7", "carol").await;
        let codes = carol
            .subscribe_many(
                1,
                &filters(&[
                    "users/carol/inbox",
                    "users/alice/inbox",
                    "devices/dev-7/#",
                    "devices/dev-8/#",
                    "devices/+/state",
                    "users/carol/outbox",
                ]),
                &[],
            )
            .await;
        let no = failure(v, ReasonCode::NotAuthorized);
        let ok = ReasonCode::Success;
        assert_eq!(codes, [ok, no, ok, no, no, no], "{v:?}");

        // Writes: her device tree and her outbox only. Each allowed one is
        // seen by the observer; in 5.0 the refused ones are answered 0x87.
        for (topic, allowed) in [
            ("devices/dev-8/state", false),
            ("users/alice/outbox", false),
            ("users/carol/inbox", false),
            ("devices/dev-7/state", true),
            ("users/carol/outbox", true),
        ] {
            let r = carol
                .publish_flow(publish(topic, b"c", QoS::AtLeastOnce, 1, false))
                .await;
            if v.is_v5() {
                let want = if allowed {
                    ReasonCode::Success
                } else {
                    ReasonCode::NotAuthorized
                };
                assert_eq!(r, want, "{topic}");
            }
            if allowed {
                obs.expect_publish(publish(topic, b"c", QoS::AtMostOnce, 0, false))
                    .await;
                if topic.starts_with("devices/") {
                    // Her own subscription `devices/dev-7/#` gets it too.
                    carol
                        .expect_publish(publish(topic, b"c", QoS::AtMostOnce, 0, false))
                        .await;
                }
            }
        }
        obs.expect_nothing_pending().await;

        // Reads: her inbox, written by someone else.
        let mut admin = login(addr, ProtocolVersion::V5, "admin", "admin").await;
        admin
            .publish_flow(publish(
                "users/carol/inbox",
                b"hi",
                QoS::AtLeastOnce,
                1,
                false,
            ))
            .await;
        carol
            .expect_publish(publish(
                "users/carol/inbox",
                b"hi",
                QoS::AtMostOnce,
                0,
                false,
            ))
            .await;
        carol.expect_nothing_pending().await;
        obs.expect_publish(publish(
            "users/carol/inbox",
            b"hi",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;
        admin.disconnect_and_wait().await;
        carol.disconnect_and_wait().await;
    }

    // A client id with `/` or wildcards would widen `devices/%c/#`: such a
    // client gets no `%c` rule at all.
    let mut sneaky = login(addr, ProtocolVersion::V5, "dev-7/x", "carol").await;
    let r = sneaky
        .publish_flow(publish(
            "devices/dev-7/x/state",
            b"s",
            QoS::AtLeastOnce,
            1,
            false,
        ))
        .await;
    assert_eq!(r, ReasonCode::NotAuthorized);
    let codes = sneaky
        .subscribe_many(1, &filters(&["devices/dev-7/x/#"]), &[])
        .await;
    assert_eq!(codes, [ReasonCode::NotAuthorized]);
    let mut wild = login(addr, ProtocolVersion::V5, "+", "carol").await;
    let codes = wild
        .subscribe_many(1, &filters(&["devices/+/#"]), &[])
        .await;
    assert_eq!(codes, [ReasonCode::NotAuthorized]);
    obs.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// Rules before the first `user` line apply to anonymous clients, and only
/// to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_rules_are_the_ones_before_any_user_line() {
    let dir = ScratchDir::new("acl-anon");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    for v in V3_AND_V5 {
        let mut anon = RawClient::connect(addr, v, "anon").await;
        let codes = anon
            .subscribe_many(
                1,
                &filters(&["public/#", "home/#", "public/anon-inbox"]),
                &[],
            )
            .await;
        let no = failure(v, ReasonCode::NotAuthorized);
        // `public/anon-inbox` is write-only: covered by `public/#` for
        // reading, so the subscription is granted.
        assert_eq!(codes, [ReasonCode::Success, no, ReasonCode::Success]);
        let r = anon
            .publish_flow(publish("public/news", b"no", QoS::AtLeastOnce, 1, false))
            .await;
        if v.is_v5() {
            assert_eq!(r, ReasonCode::NotAuthorized, "read-only topic");
        }
        let r = anon
            .publish_flow(publish(
                "public/anon-inbox",
                b"yes",
                QoS::AtLeastOnce,
                2,
                false,
            ))
            .await;
        assert_eq!(r, ReasonCode::Success);
        obs.expect_publish(publish(
            "public/anon-inbox",
            b"yes",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;
        // Its own subscription to `public/#` delivers it back.
        anon.expect_publish(publish(
            "public/anon-inbox",
            b"yes",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;

        let mut admin = login(addr, ProtocolVersion::V5, "admin", "admin").await;
        admin
            .publish_flow(publish(
                "public/news",
                b"read me",
                QoS::AtLeastOnce,
                1,
                false,
            ))
            .await;
        anon.expect_publish(publish(
            "public/news",
            b"read me",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;
        obs.expect_publish(publish(
            "public/news",
            b"read me",
            QoS::AtMostOnce,
            0,
            false,
        ))
        .await;
        admin.disconnect_and_wait().await;
        anon.expect_nothing_pending().await;
        anon.disconnect_and_wait().await;
    }
    // A user does not get the anonymous rules.
    let mut alice = login(addr, ProtocolVersion::V5, "alice", "alice").await;
    let codes = alice.subscribe_many(1, &filters(&["public/#"]), &[]).await;
    assert_eq!(codes, [ReasonCode::NotAuthorized]);
    broker.shutdown().await;
}

/// The will topic must be writable: a CONNECT whose will the client could
/// not publish itself is refused (5.0: 0x87; 3.1.1: return code 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_on_a_topic_the_client_may_not_write_is_refused() {
    let dir = ScratchDir::new("acl-will");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let mut obs = observer(addr).await;
    let will = |topic| LastWill {
        topic,
        payload: b"gone",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::EMPTY,
    };
    for v in V3_AND_V5 {
        for topic in ["home/secret/will", "public/news", "elsewhere"] {
            let c = mqtt_codec::Connect {
                will: Some(will(topic)),
                ..login_packet(v, "alice", Some("alice"), Some(b"alice-pw"))
            };
            let got = RawClient::connect_refused(addr, c).await;
            assert_refusal(&got, v, 0x05, 0x87);
        }
        // Allowed will topic: accepted, and published when the connection
        // drops without DISCONNECT.
        let c = mqtt_codec::Connect {
            will: Some(will("home/will")),
            ..login_packet(v, "alice", Some("alice"), Some(b"alice-pw"))
        };
        let alice = RawClient::connect_with(addr, c).await;
        drop(alice);
        obs.expect_publish(publish("home/will", b"gone", QoS::AtMostOnce, 0, false))
            .await;
    }
    // Refusing a will is not an authentication failure.
    assert_eq!(broker.stats().auth_failures.get(), 0);
    broker.shutdown().await;
}

/// `reload` re-reads the ACL file too: a grant removed from the file no
/// longer applies to new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_puts_a_rewritten_acl_file_in_force() {
    let dir = ScratchDir::new("acl-reload");
    let broker = acl_broker(&dir).await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut alice = login(addr, v, "alice", "alice").await;
    let codes = alice.subscribe_many(1, &filters(&["news/+"]), &[]).await;
    assert_eq!(codes, [ReasonCode::Success]);
    alice.disconnect_and_wait().await;

    std::fs::write(dir.file("acl"), ACL.replace("topic read news/+\n", "")).unwrap();
    broker.reload();
    let mut alice = login(addr, v, "alice", "alice").await;
    let codes = alice
        .subscribe_many(1, &filters(&["news/+", "home/#"]), &[])
        .await;
    assert_eq!(codes, [ReasonCode::NotAuthorized, ReasonCode::Success]);
    broker.shutdown().await;
}

// ---------------------------------------------------------------------------
// Shared subscriptions under an ACL: the rules see the filter inside
// `$share/{group}/`, on SUBSCRIBE and on every delivery (as in Mosquitto).

const SHARED_ACL: &str = "\
topic readwrite #
topic deny a/secret
topic read $SYS/broker/uptime
user bob
topic write #
pattern readwrite dev/%c/#
pattern readwrite usr/%u/#
";

/// Anonymous clients allowed, `alice` and `bob` (a publisher the deny line
/// does not bind) with passwords `<user>-pw`, the ACL above, and `$SYS`
/// every second (for the `$` case).
async fn shared_acl_broker(dir: &ScratchDir) -> BrokerHandle {
    let passwords = dir.file("passwd");
    let mut text = String::new();
    for user in ["alice", "bob"] {
        let pw = format!("{user}-pw");
        text.push_str(&format!(
            "{user}:{}\n",
            mosquitto_pbkdf2_hash(pw.as_bytes(), b"saltysaltysa")
        ));
    }
    std::fs::write(&passwords, text).unwrap();
    let acl = dir.file("acl");
    std::fs::write(&acl, SHARED_ACL).unwrap();
    broker_with(Config {
        listeners: vec![listener(true)],
        password_file: Some(passwords),
        acl_file: Some(acl),
        sys_interval_secs: 1,
        ..Config::ephemeral()
    })
    .await
}

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// `topic readwrite #` grants `$share/g/a/b`: the SUBACK grants the QoS and
/// a message to `a/b` is delivered (the mosquitto_sub case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_grants_a_shared_subscription_on_its_inner_filter() {
    let dir = ScratchDir::new("acl-share-grant");
    let broker = shared_acl_broker(&dir).await;
    let addr = broker.local_addr();
    for v in VERSIONS {
        let mut sub = RawClient::connect(addr, v, "shared-sub").await;
        sub.subscribe(1, "$share/g/a/b", QoS::AtLeastOnce).await;
        let mut p = RawClient::connect(addr, v, "shared-pub").await;
        let r = p
            .publish_flow(publish("a/b", b"hello", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(r, ReasonCode::Success);
        let got = sub.recv_publish().await;
        assert_eq!(
            (got.publish().topic, got.publish().payload),
            ("a/b", &b"hello"[..]),
            "{v:?}"
        );
        sub.ack_delivery(&got.publish()).await;
        sub.disconnect_and_wait().await;
        p.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// A `deny` line on the inner filter refuses `$share/g/a/secret`; a shared
/// subscription that overlaps it (`$share/g/a/#`) is granted, but the
/// denied topic is not delivered on it while the others are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_deny_on_the_inner_filter_refuses_the_shared_subscription_and_its_messages() {
    let dir = ScratchDir::new("acl-share-deny");
    let broker = shared_acl_broker(&dir).await;
    let addr = broker.local_addr();
    for v in VERSIONS {
        let mut sub = RawClient::connect(addr, v, "shared-sub").await;
        let codes = sub
            .subscribe_many(1, &filters(&["$share/g/a/secret", "$share/g/a/#"]), &[])
            .await;
        assert_eq!(
            codes,
            [failure(v, ReasonCode::NotAuthorized), ReasonCode::Success],
            "{v:?}"
        );
        // bob may publish to a/secret; the subscriber may not read it.
        let mut p = login(addr, v, "shared-pub", "bob").await;
        for (topic, payload) in [("a/secret", &b"no"[..]), ("a/open", b"yes")] {
            let r = p
                .publish_flow(publish(topic, payload, QoS::AtLeastOnce, 1, false))
                .await;
            assert_eq!(r, ReasonCode::Success, "{v:?} {topic}");
        }
        let got = sub.recv_publish().await;
        assert_eq!(got.publish().topic, "a/open", "{v:?}");
        sub.expect_nothing_pending().await;
        sub.disconnect_and_wait().await;
        p.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// `%c` and `%u` patterns are expanded and matched against the inner
/// filter: alice (client id `dev1`) may share `dev/dev1/#` and
/// `usr/alice/#`, not another client's or user's, and gets the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_patterns_apply_to_the_inner_filter_of_a_shared_subscription() {
    let dir = ScratchDir::new("acl-share-pattern");
    let broker = shared_acl_broker(&dir).await;
    let addr = broker.local_addr();
    for v in VERSIONS {
        let mut alice = login(addr, v, "dev1", "alice").await;
        let codes = alice
            .subscribe_many(
                1,
                &filters(&[
                    "$share/g/dev/dev1/#",
                    "$share/g/usr/alice/#",
                    "$share/g/dev/dev2/#",
                    "$share/g/usr/bob/#",
                ]),
                &[],
            )
            .await;
        let no = failure(v, ReasonCode::NotAuthorized);
        assert_eq!(
            codes,
            [ReasonCode::Success, ReasonCode::Success, no, no],
            "{v:?}"
        );
        for topic in ["dev/dev1/state", "usr/alice/inbox"] {
            alice
                .send(&Packet::Publish(publish(
                    topic,
                    b"x",
                    QoS::AtMostOnce,
                    0,
                    false,
                )))
                .await;
            let got = alice.recv_publish().await;
            assert_eq!(got.publish().topic, topic, "{v:?}");
        }
        alice.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// An inner filter that starts with `$`: `#` does not reach it (the `$`
/// rule, [MQTT-3.1.1: 4.7.2-1]), so `$share/g/$SYS/broker/load` is refused,
/// while `topic read $SYS/broker/uptime` grants `$share/g/$SYS/broker/uptime`,
/// whose next `$SYS` update is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_on_a_shared_subscription_to_a_dollar_topic_follows_the_dollar_rule() {
    let dir = ScratchDir::new("acl-share-dollar");
    let broker = shared_acl_broker(&dir).await;
    let addr = broker.local_addr();
    for v in VERSIONS {
        let mut sub = RawClient::connect(addr, v, "shared-sys").await;
        let codes = sub
            .subscribe_many(
                1,
                &filters(&["$share/g/$SYS/broker/load/#", "$share/g/$SYS/broker/uptime"]),
                &[],
            )
            .await;
        assert_eq!(
            codes,
            [failure(v, ReasonCode::NotAuthorized), ReasonCode::Success],
            "{v:?}"
        );
        // Shared subscriptions get no retained messages: this is the next
        // update, within the one-second interval.
        let got = sub.recv_publish().await;
        assert_eq!(got.publish().topic, "$SYS/broker/uptime", "{v:?}");
        sub.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

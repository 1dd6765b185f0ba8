//! MQTT topic names and filters as NATS subjects, and back.
//!
//! A topic is split at `/` (MQTT 3.1.1 / 5.0 section 4.7.1) and each level
//! becomes one NATS token, tokens joined by `.`. A NATS token may not be
//! empty and may not hold `.`, `*`, `>` or whitespace, while an MQTT level
//! may hold any UTF-8 but `/` (and U+0000), and may be empty. So each level
//! is escaped byte by byte:
//!
//! - `A`-`Z`, `a`-`z`, `0`-`9`, `-` and `_` stay as they are, so ordinary
//!   topics read naturally in NATS tools (`sensors/room-1/temp` is
//!   `sensors.room-1.temp`);
//! - every other byte is `=` and two upper-case hex digits (`.` is `=2E`,
//!   `*` is `=2A`, a space `=20`, `é` is `=C3=A9`, `$` is `=24`);
//! - an empty level is `=` alone (a leading `/`, `a//b`, a trailing `/`).
//!
//! The output uses only `[-_=.A-Za-z0-9]`, so a mapped topic is also a valid
//! JetStream key-value key, and the escaping is reversible: a `=` in the
//! output always starts an escape or stands alone for an empty level.
//!
//! A filter maps the same way with `+` as `*` and `#` as `>`. Because `a/#`
//! also matches `a` itself [MQTT-4.7.1-2] and NATS `a.>` does not, a filter
//! ending in `/#` becomes two subjects. (nats-server's own MQTT support
//! leaves literal `*` and `>` unescaped and, in 2.9, refuses topics with
//! `.`; this mapping has neither problem.)

use std::fmt::Write;

/// The byte that starts an escape, and alone stands for an empty level.
const ESC: u8 = b'=';

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Appends one topic level as a NATS token.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push(ESC as char);
        return;
    }
    for &b in level.as_bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "={b:02X}");
        }
    }
}

/// The NATS subject tokens of a topic name, without a prefix.
pub fn topic_tokens(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_level(&mut out, level);
    }
    out
}

/// `prefix.` followed by the tokens of `topic`.
pub fn topic_to_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + topic.len() + 8);
    out.push_str(prefix);
    out.push('.');
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_level(&mut out, level);
    }
    out
}

/// A single token for a whole string (a client identifier, which may hold
/// `/`): every level separator is escaped too.
pub fn key_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_level(&mut out, s);
    out
}

/// Why a subject is not one that [`topic_tokens`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotATopic;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads one token back into a level (the inverse of `push_level`).
fn pop_level(token: &str, out: &mut Vec<u8>) -> Result<(), NotATopic> {
    let b = token.as_bytes();
    if b == [ESC] {
        return Ok(());
    }
    if b.is_empty() {
        return Err(NotATopic);
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == ESC {
            let hi = b.get(i + 1).copied().and_then(hex).ok_or(NotATopic)?;
            let lo = b.get(i + 2).copied().and_then(hex).ok_or(NotATopic)?;
            let byte = hi << 4 | lo;
            // Only bytes that need it are escaped, and a level has no `/`:
            // anything else did not come from `push_level`.
            if plain(byte) || byte == b'/' {
                return Err(NotATopic);
            }
            out.push(byte);
            i += 3;
        } else if plain(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return Err(NotATopic);
        }
    }
    Ok(())
}

/// The topic name of subject tokens made by [`topic_tokens`].
pub fn tokens_to_topic(tokens: &str) -> Result<String, NotATopic> {
    let mut out = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.split('.').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        pop_level(token, &mut out)?;
    }
    String::from_utf8(out).map_err(|_| NotATopic)
}

/// The topic name of `subject`, which must start with `prefix.`.
pub fn subject_to_topic(prefix: &str, subject: &str) -> Result<String, NotATopic> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
        .ok_or(NotATopic)?;
    tokens_to_topic(rest)
}

/// The string a [`key_token`] was made from.
pub fn key_from_token(token: &str) -> Result<String, NotATopic> {
    let mut out = Vec::with_capacity(token.len());
    let b = token.as_bytes();
    let mut i = 0;
    if b == [ESC] {
        return Ok(String::new());
    }
    while i < b.len() {
        if b[i] == ESC {
            let hi = b.get(i + 1).copied().and_then(hex).ok_or(NotATopic)?;
            let lo = b.get(i + 2).copied().and_then(hex).ok_or(NotATopic)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else if plain(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return Err(NotATopic);
        }
    }
    String::from_utf8(out).map_err(|_| NotATopic)
}

/// The NATS subjects that together match what the topic filter `filter`
/// matches, each under `prefix.`: `+` becomes `*`, `#` becomes `>`, and a
/// filter ending in `/#` also yields its parent (`a/#` matches `a`). The
/// `$` rule ([MQTT-4.7.2-1]: `#` and `+` at the first level do not match
/// `$` topics) cannot be said in NATS; the receiving broker applies it.
pub fn filter_to_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut out = String::with_capacity(prefix.len() + filter.len() + 8);
    out.push_str(prefix);
    let mut parent = None;
    for level in filter.split('/') {
        match level {
            "#" => {
                // The parent matches too, unless `#` is the whole filter
                // (no parent level).
                if out.len() > prefix.len() {
                    parent = Some(out.clone());
                }
                out.push_str(".>");
            }
            "+" => out.push_str(".*"),
            level => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    let mut subjects = vec![out];
    subjects.extend(parent);
    subjects
}

/// Whether the NATS subject `subject` matches the NATS pattern `pattern`
/// (`*` one token, `>` one or more at the end): the server's rule, for the
/// tests that check this mapping against MQTT's.
pub fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(topic: &str) {
        let subject = topic_to_subject("mqtt.d", topic);
        assert!(
            subject.bytes().all(|b| plain(b) || b == b'.' || b == b'='),
            "{subject:?} holds a byte NATS or a KV key would not take"
        );
        // Every token is non-empty: NATS refuses empty tokens.
        assert!(subject.split('.').all(|t| !t.is_empty()), "{subject:?}");
        assert_eq!(subject_to_topic("mqtt.d", &subject).as_deref(), Ok(topic));
    }

    // Every valid topic name works (MQTT 5.0 section 4.7.3: any UTF-8 but
    // U+0000, `+` and `#`, at least one character).
    #[test]
    fn awkward_topics_round_trip() {
        for t in [
            "a",
            "a/b/c",
            "a.b",
            "a.b/c.d",
            "*",
            ">",
            "a/*/>",
            "a b/c d",
            " ",
            "\t",
            "é/日本語/🙂",
            "/",
            "//",
            "/a",
            "a/",
            "a//b",
            "$SYS/broker/load",
            "=",
            "=3D",
            "_x-y_",
            "%2E",
            "a\u{7f}b",
        ] {
            round_trip(t);
        }
    }

    #[test]
    fn plain_topics_read_naturally() {
        assert_eq!(
            topic_tokens("sensors/room-1/temp_c"),
            "sensors.room-1.temp_c"
        );
        assert_eq!(topic_tokens("/a//b/"), "=.a.=.b.=");
        assert_eq!(topic_tokens("a.b"), "a=2Eb");
        assert_eq!(topic_tokens("*/>"), "=2A.=3E");
    }

    #[test]
    fn subjects_not_made_by_the_mapping_are_refused() {
        for s in [
            "", "a..b", "a.=2", "a.=zz", "a.*", "a.>", "a.=61", "a.=2F", "a b",
        ] {
            assert_eq!(tokens_to_topic(s), Err(NotATopic), "{s:?}");
        }
    }

    #[test]
    fn client_ids_are_one_token() {
        for id in ["", "c1", "a/b.c", "x y*>", "é"] {
            let t = key_token(id);
            assert!(!t.contains('.') && !t.is_empty(), "{t:?}");
            assert_eq!(key_from_token(&t).as_deref(), Ok(id));
        }
    }

    // [MQTT-4.7.1-2] `a/#` matches `a` as well as everything below it.
    #[test]
    fn multi_level_wildcard_matches_its_parent() {
        let subjects = filter_to_subjects("p", "a/#");
        assert_eq!(subjects, vec!["p.a.>".to_string(), "p.a".to_string()]);
        assert_eq!(filter_to_subjects("p", "#"), vec!["p.>".to_string()]);
        assert_eq!(
            filter_to_subjects("p", "+/a.b"),
            vec!["p.*.a=2Eb".to_string()]
        );
    }

    /// A small deterministic generator (xorshift), so the property test needs
    /// no extra crate and every failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    const LEVELS: &[&str] = &[
        "", "a", "b", "a.b", "*", ">", " ", "=", "=2E", "é", "$SYS", "x y", "_", "-", "🙂",
    ];

    fn random_topic(rng: &mut Rng) -> String {
        let n = 1 + rng.next() % 4;
        (0..n)
            .map(|_| rng.pick(LEVELS))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn random_filter(rng: &mut Rng) -> String {
        let n = 1 + rng.next() % 4;
        let mut levels: Vec<&str> = (0..n)
            .map(|_| match rng.next() % 4 {
                0 => "+",
                _ => rng.pick(LEVELS),
            })
            .collect();
        if rng.next().is_multiple_of(3) {
            levels.push("#");
        }
        levels.join("/")
    }

    // Property: the mapping is reversible for every topic, and a topic's
    // subject matches a filter's subjects exactly when MQTT says the topic
    // matches the filter (leaving out the `$` rule, which NATS cannot say
    // and the receiving broker applies).
    #[test]
    fn mapping_keeps_mqtt_matching() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut matched = 0;
        for _ in 0..20_000 {
            let topic = random_topic(&mut rng);
            let filter = random_filter(&mut rng);
            round_trip(&topic);
            if topic.starts_with('$') {
                continue;
            }
            let subject = topic_to_subject("p", &topic);
            let nats = filter_to_subjects("p", &filter)
                .iter()
                .any(|f| nats_matches(f, &subject));
            let mqtt = mqtt_codec::topic::matches(&filter, &topic);
            assert_eq!(
                nats, mqtt,
                "topic {topic:?} filter {filter:?} subject {subject:?}"
            );
            matched += usize::from(mqtt);
        }
        // The generator hits both outcomes often, or the property says little.
        assert!(matched > 500, "only {matched} matches");
    }
}

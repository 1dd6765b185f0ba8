//! Access control from an ACL file in Mosquitto's format:
//!
//! ```text
//! # rules before any `user` line apply to anonymous clients
//! topic read $SYS/#
//! user alice
//! topic readwrite home/#
//! topic deny home/secret/#
//! # `pattern` rules apply to every client; %u is the user name, %c the client id
//! pattern readwrite devices/%c/#
//! ```
//!
//! The access word is optional (`topic home/#` is readwrite). A deny rule that
//! matches wins over any grant; what no rule grants is denied. Rules are
//! resolved once per connection into an [`AclView`], so a check on the
//! message path allocates nothing. A shared subscription is checked on the
//! filter inside `$share/{group}/`.

use std::collections::HashMap;
use std::path::Path;

use mqtt_codec::topic::{matches, parse_shared};

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

fn parse_rule(rest: &str) -> Option<Rule> {
    let rest = rest.trim();
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match word {
            "read" => (Access::Read, filter.trim()),
            "write" => (Access::Write, filter.trim()),
            "readwrite" => (Access::ReadWrite, filter.trim()),
            "deny" => (Access::Deny, filter.trim()),
            // No access word: the whole rest is the filter (it may contain
            // spaces, as Mosquitto allows).
            _ => (Access::ReadWrite, rest),
        },
        None => (Access::ReadWrite, rest),
    };
    (!filter.is_empty()).then(|| Rule {
        access,
        filter: filter.to_string(),
    })
}

impl Acl {
    /// Reads an ACL file; unusable lines are reported and skipped.
    pub fn load(path: &Path) -> std::io::Result<Acl> {
        let text = std::fs::read_to_string(path)?;
        Ok(Acl::parse(&text, &path.display().to_string()))
    }

    /// Parses ACL text; `origin` names it in warnings.
    pub fn parse(text: &str, origin: &str) -> Acl {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            match keyword {
                "user" => current = Some(rest.trim().to_string()),
                "topic" | "pattern" => {
                    let Some(rule) = parse_rule(rest) else {
                        tracing::warn!(
                            file = origin,
                            line = n + 1,
                            "ACL rule without a topic ignored"
                        );
                        continue;
                    };
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &current {
                            Some(user) => acl.users.entry(user.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                _ => tracing::warn!(
                    file = origin,
                    line = n + 1,
                    keyword,
                    "unknown ACL keyword ignored"
                ),
            }
        }
        acl
    }

    /// The rules that apply to one client.
    pub fn view(&self, username: Option<&str>, client_id: &str) -> AclView {
        let mut rules = match username {
            Some(u) => self.users.get(u).cloned().unwrap_or_default(),
            None => self.anonymous.clone(),
        };
        // A user name or client id with wildcards or levels could widen a
        // pattern, so such clients get no pattern rules that use them.
        let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
        for p in &self.patterns {
            let needs_user = p.filter.contains("%u");
            let needs_client = p.filter.contains("%c");
            let user = match (needs_user, username) {
                (true, None) => continue,
                (true, Some(u)) if unsafe_value(u) => continue,
                (_, u) => u.unwrap_or(""),
            };
            if needs_client && unsafe_value(client_id) {
                continue;
            }
            rules.push(Rule {
                access: p.access,
                filter: p.filter.replace("%u", user).replace("%c", client_id),
            });
        }
        AclView {
            rules: Some(rules.into_boxed_slice()),
        }
    }
}

/// The ACL rules of one connection, or no restriction at all.
#[derive(Debug, Clone, Default)]
pub struct AclView {
    /// `None` when no ACL file is configured: everything is allowed.
    /// (A boxed slice, not a `Vec`: every connection carries one.)
    rules: Option<Box<[Rule]>>,
}

impl AclView {
    /// No ACL: everything allowed.
    pub fn allow_all() -> AclView {
        AclView { rules: None }
    }

    fn check(
        &self,
        topic: &str,
        wanted: Access,
        rule_applies: impl Fn(&str, &str) -> bool,
    ) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let mut granted = false;
        for r in rules {
            if !rule_applies(&r.filter, topic) {
                continue;
            }
            match (r.access, wanted) {
                (Access::Deny, _) => return false,
                (Access::ReadWrite, _) => granted = true,
                (a, w) if a == w => granted = true,
                _ => {}
            }
        }
        granted
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, topic: &str) -> bool {
        self.check(topic, Access::Write, matches)
    }

    /// May this client receive a message published to `topic`?
    pub fn can_receive(&self, topic: &str) -> bool {
        self.check(topic, Access::Read, matches)
    }

    /// May this client subscribe to `filter`? A grant must cover everything
    /// the filter can match; a deny rule that covers it refuses it.
    /// Messages are checked again on delivery (on their topic), so what
    /// slips through an overlap is still not delivered.
    ///
    /// For a shared subscription `$share/{group}/{filter}` the rules are
    /// matched against the filter inside it, as in Mosquitto: the prefix
    /// names a group, not topics, and `#` could never match it (a filter
    /// starting with a wildcard does not reach `$` names [MQTT-5: 4.7.2-1]).
    pub fn can_subscribe(&self, filter: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let filter = parse_shared(filter).map_or(filter, |s| s.filter);
        let mut granted = false;
        for r in rules {
            match r.access {
                Access::Deny if covers(&r.filter, filter) => return false,
                Access::Read | Access::ReadWrite if covers(&r.filter, filter) => granted = true,
                _ => {}
            }
        }
        granted
    }
}

/// Whether every topic matched by `filter` is matched by `rule`.
fn covers(rule: &str, filter: &str) -> bool {
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    // The `$` rule: a leading wildcard in the rule does not reach `$` topics.
    if filter.starts_with('$') && (rule.starts_with('+') || rule.starts_with('#')) {
        return false;
    }
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(fl)) if fl != "#" => {}
            (Some(rl), Some(fl)) if rl == fl && rl != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#
user alice
topic readwrite home/#
topic deny home/secret/#
topic write log
user bob
topic home/+/temp
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    #[test]
    fn user_rules_grant_and_deny_wins() {
        let acl = Acl::parse(FILE, "test");
        let alice = acl.view(Some("alice"), "a1");
        assert!(alice.can_publish("home/kitchen/temp"));
        assert!(alice.can_receive("home/kitchen/temp"));
        assert!(!alice.can_publish("home/secret/key"));
        assert!(!alice.can_receive("home/secret/key"));
        assert!(alice.can_publish("log"));
        assert!(!alice.can_receive("log"));
        assert!(!alice.can_publish("public/news"));
    }

    #[test]
    fn anonymous_rules_come_before_any_user_line() {
        let acl = Acl::parse(FILE, "test");
        let anon = acl.view(None, "x");
        assert!(anon.can_receive("public/news"));
        assert!(!anon.can_publish("public/news"));
        assert!(!anon.can_receive("home/a/temp"));
    }

    #[test]
    fn patterns_substitute_user_and_client() {
        let acl = Acl::parse(FILE, "test");
        let bob = acl.view(Some("bob"), "sensor-7");
        assert!(bob.can_publish("devices/sensor-7/state"));
        assert!(!bob.can_publish("devices/sensor-8/state"));
        assert!(bob.can_receive("users/bob/inbox"));
        assert!(!bob.can_receive("users/alice/inbox"));
        // No user name: %u patterns do not apply.
        assert!(!acl.view(None, "c").can_receive("users//inbox"));
        // A client id with a wildcard cannot widen a pattern.
        assert!(!acl.view(Some("bob"), "#").can_publish("devices/x/state"));
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let acl = Acl::parse(FILE, "test");
        let alice = acl.view(Some("alice"), "a1");
        assert!(alice.can_subscribe("home/#"));
        assert!(alice.can_subscribe("home/+/temp"));
        assert!(!alice.can_subscribe("#"));
        assert!(!alice.can_subscribe("home/secret/#"));
        let bob = acl.view(Some("bob"), "b");
        assert!(bob.can_subscribe("home/+/temp"));
        assert!(bob.can_subscribe("home/kitchen/temp"));
        assert!(!bob.can_subscribe("home/#"));
    }

    #[test]
    fn shared_subscriptions_are_checked_on_their_inner_filter() {
        let acl = Acl::parse(
            "topic readwrite #\ntopic deny a/secret\ntopic read $SYS/#\n",
            "t",
        );
        let anon = acl.view(None, "c");
        assert!(anon.can_subscribe("$share/g/a/b"));
        assert!(anon.can_subscribe("$share/g/#"));
        assert!(!anon.can_subscribe("$share/g/a/secret"));
        assert!(anon.can_subscribe("$share/g/$SYS/broker/#"));
        assert!(!anon.can_subscribe("$share/g/$other/x"));
    }

    #[test]
    fn no_acl_allows_everything() {
        let v = AclView::allow_all();
        assert!(v.can_publish("a") && v.can_receive("a") && v.can_subscribe("#"));
    }
}

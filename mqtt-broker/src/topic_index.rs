//! The subscription index: a trie with one level of the topic per node, so a
//! publish visits only the branches its topic can match (exact level, `+`,
//! `#`) instead of scanning every subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mqtt_codec::SubscriptionOptions;

use crate::session::Session;

/// One subscription of one session.
#[derive(Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: Arc<Session>,
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its MQTT 5 Subscription Identifier.
    pub sub_id: Option<u32>,
}

/// The members of one shared subscription group on one filter.
struct SharedGroup {
    name: Box<str>,
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

impl SharedGroup {
    /// Round robin over members, preferring one that is connected.
    fn pick(&self) -> Option<&Subscriber> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let online = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.session.is_online());
        online.or_else(|| self.members.get(start % n.max(1)))
    }
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: Vec<Subscriber>,
    shared: Vec<SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.shared.is_empty()
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Subscriber>) {
        out.extend(self.subscribers.iter());
        out.extend(self.shared.iter().filter_map(SharedGroup::pick));
    }
}

/// All subscriptions of all sessions.
#[derive(Default)]
pub struct SubscriptionIndex {
    root: Node,
    count: usize,
}

fn same(a: &Subscriber, session: &Arc<Session>) -> bool {
    Arc::ptr_eq(&a.session, session)
}

impl SubscriptionIndex {
    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds or replaces the subscription of `sub.session` to `filter` (a plain
    /// filter) in share group `group`. Returns true when it replaced one.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, sub: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let list = match group {
            None => &mut node.subscribers,
            Some(name) => {
                let idx = match node.shared.iter().position(|g| &*g.name == name) {
                    Some(i) => i,
                    None => {
                        node.shared.push(SharedGroup {
                            name: name.into(),
                            members: Vec::new(),
                            next: AtomicUsize::new(0),
                        });
                        node.shared.len() - 1
                    }
                };
                &mut node.shared[idx].members
            }
        };
        if let Some(existing) = list.iter_mut().find(|s| same(s, &sub.session)) {
            *existing = sub;
            true
        } else {
            list.push(sub);
            self.count += 1;
            false
        }
    }

    /// Removes the subscription of `session` to `filter` in `group`; returns
    /// whether one existed. Empty branches are pruned.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, session: &Arc<Session>) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, group, session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Collects the subscriptions that match `topic`, one member per shared
    /// group. A topic starting with `$` is not matched by a filter starting
    /// with a wildcard [MQTT-4.7.2-1].
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Vec<&'a Subscriber>) {
        let dollar = topic.starts_with('$');
        walk(&self.root, topic.split('/'), dollar, out);
    }
}

fn walk<'a, 't>(
    node: &'a Node,
    mut levels: std::str::Split<'t, char>,
    skip_wildcards: bool,
    out: &mut Vec<&'a Subscriber>,
) {
    let Some(level) = levels.next() else {
        node.collect(out);
        // `a/#` matches `a` too.
        if let Some(hash) = node.children.get("#") {
            hash.collect(out);
        }
        return;
    };
    if !skip_wildcards {
        if let Some(hash) = node.children.get("#") {
            hash.collect(out);
        }
        if let Some(plus) = node.children.get("+") {
            walk(plus, levels.clone(), false, out);
        }
    }
    if let Some(child) = node.children.get(level) {
        walk(child, levels, false, out);
    }
}

fn remove_at(
    node: &mut Node,
    levels: &[&str],
    group: Option<&str>,
    session: &Arc<Session>,
) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => {
                let before = node.subscribers.len();
                node.subscribers.retain(|s| !same(s, session));
                before != node.subscribers.len()
            }
            Some(name) => {
                let Some(i) = node.shared.iter().position(|g| &*g.name == name) else {
                    return false;
                };
                let members = &mut node.shared[i].members;
                let before = members.len();
                members.retain(|s| !same(s, session));
                let removed = before != members.len();
                if members.is_empty() {
                    node.shared.swap_remove(i);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

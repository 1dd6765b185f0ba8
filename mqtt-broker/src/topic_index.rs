//! The subscription index: a trie with one level of the topic per node, so a
//! publish visits only the branches its topic can match (exact level, `+`,
//! `#`) instead of scanning every subscription.

use std::collections::HashMap;

/// The hasher of the trie's levels. Topic levels come from clients, so it
/// is seeded per process (no precomputed collisions), but it is several
/// times faster than SipHash on short keys; a publish hashes every level of
/// its topic.
pub(crate) type LevelHasher = foldhash::fast::RandomState;
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
    /// Children by plain level.
    children: HashMap<Box<str>, Node, LevelHasher>,
    /// The `+` and `#` children, apart: a publish looks at both on every
    /// level, and a field costs no hashing.
    plus: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    subscribers: Vec<Subscriber>,
    shared: Vec<SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.subscribers.is_empty()
            && self.shared.is_empty()
    }

    fn child_mut(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_default(),
            "#" => self.hash.get_or_insert_default(),
            _ => self.children.entry(level.into()).or_default(),
        }
    }

    /// Adds this node's subscribers to `out`; returns whether a shared
    /// group was among them (its member is picked per message).
    fn collect<'a>(&'a self, out: &mut Vec<&'a Subscriber>, with_shared: bool) -> bool {
        out.extend(self.subscribers.iter());
        if !with_shared {
            return false;
        }
        out.extend(self.shared.iter().filter_map(SharedGroup::pick));
        !self.shared.is_empty()
    }
}

/// All subscriptions of all sessions.
#[derive(Default)]
pub struct SubscriptionIndex {
    root: Node,
    count: usize,
    /// Shared groups are left out of `matches`: in a cluster, a group's
    /// messages come from the cluster, one member cluster-wide
    /// (`cluster::shared`), which picks with `pick_shared`.
    pub groups_elsewhere: bool,
}

fn same(a: &Subscriber, session: &Arc<Session>) -> bool {
    Arc::ptr_eq(&a.session, session)
}

impl SubscriptionIndex {
    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// An empty index; `groups_elsewhere` as that field says.
    pub fn new(groups_elsewhere: bool) -> SubscriptionIndex {
        SubscriptionIndex {
            groups_elsewhere,
            ..SubscriptionIndex::default()
        }
    }

    /// Adds or replaces the subscription of `sub.session` to `filter` (a plain
    /// filter) in share group `group`. Returns true when it replaced one.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, sub: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level);
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
    /// with a wildcard [MQTT-3.1.1/5: 4.7.2-1]. Returns whether a shared group
    /// matched: then the answer differs from one message to the next.
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Vec<&'a Subscriber>) -> bool {
        let dollar = topic.starts_with('$');
        let mut shared = false;
        let with_shared = !self.groups_elsewhere;
        walk(
            &self.root,
            topic.split('/'),
            dollar,
            out,
            &mut shared,
            with_shared,
        );
        shared
    }

    /// One member of share group `group` on `filter` (round robin,
    /// preferring connected ones), if it has any here.
    #[cfg(feature = "cluster")]
    pub fn pick_shared(&self, filter: &str, group: &str) -> Option<&Subscriber> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = match level {
                "+" => node.plus.as_deref()?,
                "#" => node.hash.as_deref()?,
                _ => node.children.get(level)?,
            };
        }
        node.shared.iter().find(|g| &*g.name == group)?.pick()
    }
}

fn walk<'a, 't>(
    node: &'a Node,
    mut levels: std::str::Split<'t, char>,
    skip_wildcards: bool,
    out: &mut Vec<&'a Subscriber>,
    shared: &mut bool,
    with_shared: bool,
) {
    let Some(level) = levels.next() else {
        *shared |= node.collect(out, with_shared);
        // `a/#` matches `a` too.
        if let Some(hash) = &node.hash {
            *shared |= hash.collect(out, with_shared);
        }
        return;
    };
    if !skip_wildcards {
        if let Some(hash) = &node.hash {
            *shared |= hash.collect(out, with_shared);
        }
        if let Some(plus) = &node.plus {
            walk(plus, levels.clone(), false, out, shared, with_shared);
        }
    }
    if let Some(child) = node.children.get(level) {
        walk(child, levels, false, out, shared, with_shared);
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
    let child = match *first {
        "+" => node.plus.as_deref_mut(),
        "#" => node.hash.as_deref_mut(),
        level => node.children.get_mut(level),
    };
    let Some(child) = child else {
        return false;
    };
    let removed = remove_at(child, rest, group, session);
    if child.is_empty() {
        match *first {
            "+" => node.plus = None,
            "#" => node.hash = None,
            level => {
                node.children.remove(level);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence of 1 to `max` items from `alphabet`, joined by `/`.
    fn paths(alphabet: &[&str], max: usize) -> Vec<String> {
        let mut all: Vec<Vec<&str>> = alphabet.iter().map(|a| vec![*a]).collect();
        let mut last = all.clone();
        for _ in 1..max {
            let next: Vec<Vec<&str>> = last
                .iter()
                .flat_map(|p| {
                    alphabet.iter().map(move |a| {
                        let mut p = p.clone();
                        p.push(a);
                        p
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all.into_iter().map(|p| p.join("/")).collect()
    }

    /// The index answers exactly what the codec's reference matcher says,
    /// for every filter and topic of up to three levels over a small
    /// alphabet (empty levels, `$` topics, `+` and `#` at every place), and
    /// removing every subscription leaves it empty.
    #[test]
    fn index_agrees_with_the_reference_matcher() {
        let filters: Vec<String> = paths(&["a", "b", "", "$s", "+", "#"], 3)
            .into_iter()
            .filter(|f| mqtt_codec::topic::valid_topic_filter(f))
            .collect();
        let topics: Vec<String> = paths(&["a", "b", "", "$s"], 3);
        let mut index = SubscriptionIndex::default();
        let sessions: Vec<Arc<Session>> = filters
            .iter()
            .map(|f| Arc::new(Session::new(f.as_str().into())))
            .collect();
        for (f, s) in filters.iter().zip(&sessions) {
            let sub = Subscriber {
                session: s.clone(),
                options: SubscriptionOptions::default(),
                sub_id: None,
            };
            assert!(!index.insert(f, None, sub));
        }
        assert_eq!(index.len(), filters.len());
        for topic in &topics {
            let mut out = Vec::new();
            index.matches(topic, &mut out);
            let mut got: Vec<&str> = out.iter().map(|s| &*s.session.id).collect();
            got.sort_unstable();
            let mut want: Vec<&str> = filters
                .iter()
                .filter(|f| mqtt_codec::topic::matches(f, topic))
                .map(String::as_str)
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "topic {topic:?}");
        }
        for (f, s) in filters.iter().zip(&sessions) {
            assert!(index.remove(f, None, s), "{f}");
        }
        assert_eq!(index.len(), 0);
        assert!(index.root.is_empty());
    }
}

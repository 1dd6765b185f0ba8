//! Retained messages, in a trie by topic level so that a wildcard subscribe
//! visits only the branches its filter can match.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::message::Message;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }
}

/// The retained message of every topic that has one.
#[derive(Default)]
pub struct RetainedStore {
    root: Node,
    count: usize,
}

impl RetainedStore {
    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Stores `message` as the retained message of its topic, or clears the
    /// topic's retained message when the payload is empty [MQTT-5: 3.3.1-6/7].
    pub fn set(&mut self, message: Arc<Message>) {
        let topic = message.topic.clone();
        if message.payload.is_empty() {
            self.remove(&topic);
            return;
        }
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(message).is_none() {
            self.count += 1;
        }
    }

    /// Clears the retained message of `topic`.
    pub fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        if remove_at(&mut self.root, &levels) {
            self.count -= 1;
        }
    }

    /// Every unexpired retained message whose topic matches `filter`.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        let levels: Vec<&str> = filter.split('/').collect();
        collect(&self.root, &levels, true, &mut out);
        out.retain(|m| !m.is_expired(now));
        out
    }
}

fn collect(node: &Node, levels: &[&str], at_root: bool, out: &mut Vec<Arc<Message>>) {
    let Some((first, rest)) = levels.split_first() else {
        out.extend(node.message.iter().cloned());
        return;
    };
    // Wildcards in the first level do not match `$` topics [MQTT-3.1.1/5: 4.7.2-1].
    let visible = |name: &str| !(at_root && name.starts_with('$'));
    match *first {
        "#" => {
            // `a/#` matches `a` itself.
            out.extend(node.message.iter().filter(|_| !at_root).cloned());
            for (name, child) in &node.children {
                if visible(name) {
                    subtree(child, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if visible(name) {
                    collect(child, rest, false, out);
                }
            }
        }
        level => {
            if let Some(child) = node.children.get(level) {
                collect(child, rest, false, out);
            }
        }
    }
}

fn subtree(node: &Node, out: &mut Vec<Arc<Message>>) {
    out.extend(node.message.iter().cloned());
    for child in node.children.values() {
        subtree(child, out);
    }
}

fn remove_at(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

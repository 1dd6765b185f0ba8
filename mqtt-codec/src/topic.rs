//! Topic names and filters (section 4.7): validation, matching with the `$`
//! rule, and shared subscriptions `$share/{group}/{filter}` (4.8.2). Used by
//! the decoder and by brokers and clients alike.

use crate::scan::{
    copy_plain_filter, copy_plain_name, has_nul, has_wildcard_or_nul, plain_filter_ok,
};
use crate::writer::copy;

/// A topic name is valid: at least one character, no `+` or `#`, no U+0000,
/// and at most 65,535 bytes [MQTT-3.1.1: 4.7.1-1, MQTT-3.1.1/5: 4.7.3-1].
#[inline]
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= usize::from(u16::MAX)
        && !has_wildcard_or_nul(topic.as_bytes())
}

/// A topic filter is valid: at least one character; `+` fills a whole level;
/// `#` fills the last level alone [MQTT-3.1.1: 4.7.1-2/3]. A `$share/` filter needs a
/// non-empty group without wildcards and a valid filter after it.
pub fn valid_topic_filter(filter: &str) -> bool {
    filter_ok(filter)
}

/// [`valid_topic_filter`], inlined into the loops over a packet's filters so
/// that a filter costs its scan and not a call as well.
#[inline(always)]
pub(crate) fn filter_ok(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > usize::from(u16::MAX) {
        return false;
    }
    match filter.strip_prefix(SHARE_PREFIX) {
        // One scan for U+0000 and the wildcards together.
        None => plain_filter_ok::<true>(filter.as_bytes()),
        Some(rest) => valid_shared_filter(filter, rest),
    }
}

/// Copies a topic name the caller found non-empty and at most 65,535 bytes
/// long, saying whether it is valid.
#[inline(always)]
pub(crate) fn copy_name(dst: &mut [u8], topic: &str) -> bool {
    copy_plain_name(dst, topic.as_bytes())
}

/// Copies a topic filter the caller found non-empty and at most 65,535 bytes
/// long, saying whether it is valid: [`filter_ok`] with the copy done by the
/// same loads.
#[inline(always)]
pub(crate) fn copy_filter(dst: &mut [u8], filter: &str) -> bool {
    // A first byte other than `$`, the common case, settles it in one test,
    // before anything is compared with the `$share/` prefix.
    if filter.as_bytes().first() == Some(&b'$') {
        copy_dollar_filter(dst, filter)
    } else {
        copy_plain_filter(dst, filter.as_bytes())
    }
}

/// [`copy_filter`] for a filter starting with `$`: a shared subscription or
/// a plain filter such as `$SYS/#`. Out of line, so that the loops over a
/// packet's filters carry only the plain case.
#[inline(never)]
fn copy_dollar_filter(dst: &mut [u8], filter: &str) -> bool {
    match filter.strip_prefix(SHARE_PREFIX) {
        None => copy_plain_filter(dst, filter.as_bytes()),
        Some(rest) => {
            copy(dst, filter.as_bytes());
            valid_shared_filter(filter, rest)
        }
    }
}

/// `rest` is `filter` after `$share/`.
fn valid_shared_filter(filter: &str, rest: &str) -> bool {
    !has_nul(filter.as_bytes())
        && match rest.split_once('/') {
            Some((group, inner)) => valid_share_group(group) && valid_plain_filter(inner),
            None => false,
        }
}

/// Each `+` or `#` must fill its level (start of the filter or after `/`, end
/// of the filter or before `/`), and `#` must also end the filter.
fn valid_plain_filter(filter: &str) -> bool {
    !filter.is_empty() && plain_filter_ok::<false>(filter.as_bytes())
}

fn valid_share_group(group: &str) -> bool {
    !group.is_empty() && !group.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'))
}

const SHARE_PREFIX: &str = "$share/";

/// A shared subscription filter split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// The share name.
    pub group: &'a str,
    /// The filter that selects the messages.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `None` for a filter that is not a valid
/// shared subscription.
pub fn parse_shared(filter: &str) -> Option<SharedFilter<'_>> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let (group, inner) = rest.split_once('/')?;
    if valid_share_group(group) && valid_plain_filter(inner) {
        Some(SharedFilter {
            group,
            filter: inner,
        })
    } else {
        None
    }
}

/// Whether a (non-shared) filter matches a topic name.
///
/// A topic that starts with `$` is not matched by a filter that starts with a
/// wildcard [MQTT-3.1.1/5: 4.7.2-1]; `a/#` matches `a` itself [MQTT-3.1.1: 4.7.1-2].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_topic_name("room_temp"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("$SYS/broker"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a\0b"));
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/c",
            "$share/g/a/#",
            "sport/tennis/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+",
            "a/b+/c",
            "#/a",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    /// The level-splitting definition the one-pass check replaced.
    fn plain_filter_by_levels(filter: &str) -> bool {
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            let ok = match level {
                "+" => true,
                "#" => levels.peek().is_none(),
                _ => !level.bytes().any(|b| b == b'+' || b == b'#'),
            };
            if !ok {
                return false;
            }
        }
        !filter.is_empty()
    }

    #[test]
    fn one_pass_filter_check_matches_the_level_definition() {
        // Every string of up to 7 bytes over the characters that matter.
        let alphabet = [b'a', b'/', b'+', b'#'];
        let mut buf = [0u8; 7];
        for len in 0..=buf.len() {
            for mut n in 0..alphabet.len().pow(len as u32) {
                for b in &mut buf[..len] {
                    *b = alphabet[n % alphabet.len()];
                    n /= alphabet.len();
                }
                let s = core::str::from_utf8(&buf[..len]).unwrap();
                assert_eq!(valid_plain_filter(s), plain_filter_by_levels(s), "{s:?}");
            }
        }
    }

    #[test]
    fn word_at_a_time_filter_check_matches_the_level_definition() {
        // Longer strings, so that whole words and the overlapping last word
        // are scanned: a fixed pseudo-random walk over the same characters.
        let alphabet = [b'a', b'/', b'+', b'#', b'/', b'a', b'a', b'a'];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 40];
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 41) as usize;
            let mut bits = state;
            for (i, b) in buf[..len].iter_mut().enumerate() {
                if i % 21 == 0 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    bits = state;
                }
                *b = alphabet[(bits & 7) as usize];
                bits >>= 3;
            }
            let s = core::str::from_utf8(&buf[..len]).unwrap();
            assert_eq!(valid_plain_filter(s), plain_filter_by_levels(s), "{s:?}");
            assert_eq!(
                valid_topic_filter(s),
                !s.is_empty() && plain_filter_by_levels(s),
                "{s:?}"
            );
            let mut out = [0u8; 40];
            if !s.is_empty() {
                assert_eq!(
                    copy_filter(&mut out[..len], s),
                    valid_topic_filter(s),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn copying_a_filter_checks_shared_subscriptions_too() {
        for f in [
            "$share/g/a/#",
            "$share/g/+",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/a#",
            "$share/g/a\0",
            "$share/g\0/a",
            "$SYS/#",
            "$shar/g/a",
        ] {
            let mut out = [0u8; 16];
            let dst = &mut out[..f.len()];
            assert_eq!(copy_filter(dst, f), valid_topic_filter(f), "{f:?}");
        }
    }

    #[test]
    fn matching_follows_section_4_7() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+", "sport/tennis/player1"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("$SYS/+", "$SYS/uptime"));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(
            parse_shared("$share/g1/a/+"),
            Some(SharedFilter {
                group: "g1",
                filter: "a/+"
            })
        );
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share/g"), None);
    }
}

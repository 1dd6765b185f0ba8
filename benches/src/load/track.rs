//! Loss, duplicate and reordering detection for one publisher's stream as
//! seen by one receiver (a subscriber, or all members of a shared group
//! together): one bit per sequence number.

/// Sequence numbers above this are not tracked (a corrupt or foreign
/// payload must not make the bitmap huge).
pub const MAX_SEQ: u64 = 1 << 34;

/// What one receiver got from one publisher.
#[derive(Debug, Clone, Default)]
pub struct SeqTrack {
    bits: Vec<u64>,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence number.
    pub reordered: u64,
    /// Highest sequence number seen, plus one.
    next: u64,
}

impl SeqTrack {
    /// Records `seq`; false when it is out of range and was ignored.
    #[inline]
    pub fn record(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            let len = (word + 1).max(self.bits.len() * 2).max(1024);
            self.bits.resize(len, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return true;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        if seq < self.next {
            self.reordered += 1;
        } else {
            self.next = seq + 1;
        }
        true
    }

    /// Of `sent` messages, how many are missing: `(in gaps, at the tail)`.
    /// Gaps are sequence numbers below the highest one received; the tail
    /// is everything after it (a stream that stopped early).
    pub fn missing(&self, sent: u64) -> (u64, u64) {
        let highest = self.next.min(sent);
        let mut below = 0;
        let full = (highest / 64) as usize;
        for w in self.bits.iter().take(full) {
            below += u64::from(w.count_ones());
        }
        if let Some(w) = self.bits.get(full) {
            let rem = highest % 64;
            if rem > 0 {
                below += u64::from((w & ((1u64 << rem) - 1)).count_ones());
            }
        }
        (highest - below, sent - highest)
    }

    /// Folds `other` (the same publisher seen by another member of a shared
    /// group) into this one: a sequence number both received counts as a
    /// duplicate.
    pub fn merge(&mut self, other: &SeqTrack) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        let mut overlap = 0;
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            overlap += u64::from((*a & b).count_ones());
            *a |= b;
        }
        self.unique = self.unique + other.unique - overlap;
        self.duplicates += other.duplicates + overlap;
        self.reordered += other.reordered;
        self.next = self.next.max(other.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_reordering() {
        let mut t = SeqTrack::default();
        for s in [0, 1, 3, 2, 3, 5000] {
            assert!(t.record(s));
        }
        assert_eq!((t.unique, t.duplicates, t.reordered), (5, 1, 1));
        assert!(!t.record(MAX_SEQ));
        // 0..=5000 minus 4..5000 missing in gaps; 5001..6000 at the tail.
        assert_eq!(t.missing(6000), (4996, 999));
        assert_eq!(SeqTrack::default().missing(10), (0, 10));
        let mut all = SeqTrack::default();
        (0..128).for_each(|s| {
            all.record(s);
        });
        assert_eq!(all.missing(128), (0, 0));
        assert_eq!(all.missing(100), (0, 0));
    }

    #[test]
    fn merge_counts_overlap_as_duplicates() {
        let mut a = SeqTrack::default();
        let mut b = SeqTrack::default();
        for s in 0..100 {
            if s % 2 == 0 {
                a.record(s);
            } else {
                b.record(s);
            }
        }
        b.record(10);
        a.merge(&b);
        assert_eq!((a.unique, a.duplicates), (100, 1));
    }
}

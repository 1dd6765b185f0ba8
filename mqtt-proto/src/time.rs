//! Time as an argument: what a point in time must offer, and a plain
//! millisecond count for callers (and tests) without a clock type.

use core::ops::Add;
use core::time::Duration;

/// A point in time: ordered, and moved forward by a `Duration`.
/// `std::time::Instant` and `tokio::time::Instant` are, and so is [`Millis`].
pub trait Instant: Copy + Ord + Add<Duration, Output = Self> {}

impl<T: Copy + Ord + Add<Duration, Output = T>> Instant for T {}

/// Milliseconds since an origin the caller chooses: explicit time for tests
/// and for callers that count time themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Add<Duration> for Millis {
    type Output = Millis;

    fn add(self, d: Duration) -> Millis {
        // Saturates: a keep alive of 65,535 s from the far future is still
        // "never", not a wrap to the past.
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_add_saturates_instead_of_wrapping() {
        assert_eq!(Millis(5) + Duration::from_millis(7), Millis(12));
        assert_eq!(
            Millis(u64::MAX - 1) + Duration::from_secs(1),
            Millis(u64::MAX)
        );
    }
}

//! A list that is either a view over already-validated wire bytes (decoded) or
//! a caller's slice (to encode), iterated the same way. SUBSCRIBE filters,
//! UNSUBSCRIBE filters and SUBACK / UNSUBACK reason codes use it, so no list
//! has a fixed cap and none is copied.

use core::fmt;

use crate::error::DecodeError;
use crate::wire::Reader;

type ReadFn<'a, T> = fn(&mut Reader<'a>) -> Result<T, DecodeError>;

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    Encoded(&'a [u8], ReadFn<'a, T>),
    Items(&'a [T]),
}

/// A list of `T` borrowed from a packet or from the caller.
#[derive(Clone, Copy)]
pub struct List<'a, T>(Repr<'a, T>);

impl<'a, T: Copy> List<'a, T> {
    /// A list to encode.
    pub const fn from_slice(items: &'a [T]) -> Self {
        List(Repr::Items(items))
    }

    /// Validates every item of `bytes` with `read`; at least one is required.
    pub(crate) fn decode(bytes: &'a [u8], read: ReadFn<'a, T>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        while !r.is_empty() {
            read(&mut r)?;
        }
        Ok(List(Repr::Encoded(bytes, read)))
    }

    /// The items in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter(match self.0 {
            Repr::Encoded(b, read) => IterRepr::Encoded(Reader::new(b), read),
            Repr::Items(items) => IterRepr::Items(items.iter()),
        })
    }

    /// The number of items (counted by walking an encoded list).
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Items(items) => items.len(),
            Repr::Encoded(..) => self.iter().count(),
        }
    }

    /// True when the list has no item.
    pub fn is_empty(&self) -> bool {
        match self.0 {
            Repr::Items(items) => items.is_empty(),
            Repr::Encoded(b, _) => b.is_empty(),
        }
    }
}

impl<T: Copy + PartialEq> PartialEq for List<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<T: Copy + Eq> Eq for List<'_, T> {}

impl<T: Copy + fmt::Debug> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Copy> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

enum IterRepr<'a, T> {
    Encoded(Reader<'a>, ReadFn<'a, T>),
    Items(core::slice::Iter<'a, T>),
}

/// Iterator over a [`List`].
pub struct ListIter<'a, T>(IterRepr<'a, T>);

impl<T: Copy> Iterator for ListIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.0 {
            // Validated on decode: an error cannot occur, and stopping keeps
            // the iterator panic-free regardless.
            IterRepr::Encoded(r, _) if r.is_empty() => None,
            IterRepr::Encoded(r, read) => read(r).ok(),
            IterRepr::Items(it) => it.next().copied(),
        }
    }
}

//! A list that is either a view over already-validated wire bytes (decoded) or
//! a caller's slice (to encode), iterated the same way. SUBSCRIBE filters,
//! UNSUBSCRIBE filters and SUBACK / UNSUBACK reason codes use it, so no list
//! has a fixed cap and none is copied.

use core::fmt;

use crate::error::DecodeError;
use crate::header::PacketType;
use crate::reason::ReasonCode;
use crate::subscribe::{read_code, read_filter, SubscribeFilter};
use crate::wire::Reader;

mod sealed {
    pub trait Sealed {}
}

/// An item type a [`List`] can hold. Sealed: implemented by this crate for
/// subscription entries, topic filters and reason codes.
pub trait ListItem<'a>: Copy + sealed::Sealed {
    /// Reads one item from the front of `bytes` in the given wire `variant`
    /// (which version's rules apply).
    #[doc(hidden)]
    fn read_item(bytes: &mut &'a [u8], variant: u8) -> Result<Self, DecodeError>;
}

/// Wire variants: which rules an encoded list was validated with.
pub(crate) const VARIANT_V3: u8 = 0;
pub(crate) const VARIANT_V5: u8 = 1;
pub(crate) const VARIANT_UNSUBACK: u8 = 2;

fn with_reader<'a, T>(
    bytes: &mut &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let item = read(&mut r)?;
    *bytes = r.rest();
    Ok(item)
}

impl sealed::Sealed for SubscribeFilter<'_> {}
impl<'a> ListItem<'a> for SubscribeFilter<'a> {
    fn read_item(bytes: &mut &'a [u8], variant: u8) -> Result<Self, DecodeError> {
        with_reader(bytes, |r| SubscribeFilter::read(r, variant == VARIANT_V5))
    }
}

impl sealed::Sealed for &str {}
impl<'a> ListItem<'a> for &'a str {
    fn read_item(bytes: &mut &'a [u8], _variant: u8) -> Result<Self, DecodeError> {
        with_reader(bytes, read_filter)
    }
}

impl sealed::Sealed for ReasonCode {}
impl<'a> ListItem<'a> for ReasonCode {
    fn read_item(bytes: &mut &'a [u8], variant: u8) -> Result<Self, DecodeError> {
        with_reader(bytes, |r| match variant {
            VARIANT_UNSUBACK => read_code(r, PacketType::UnsubAck, true),
            v => read_code(r, PacketType::SubAck, v == VARIANT_V5),
        })
    }
}

/// Where a list's items are: wire bytes validated with the rules of a variant,
/// or a caller's slice.
#[derive(Clone, Copy)]
pub(crate) enum Repr<'a, T> {
    Encoded(&'a [u8], u8),
    Items(&'a [T]),
}

/// A list of `T` borrowed from a packet or from the caller.
#[derive(Clone, Copy)]
pub struct List<'a, T>(Repr<'a, T>);

impl<'a, T> List<'a, T> {
    /// What the list is made of, for an encoder that can copy bytes it
    /// decoded without reading them item by item.
    #[inline]
    pub(crate) fn repr(&self) -> Repr<'a, T>
    where
        T: Copy,
    {
        self.0
    }
}

impl<'a, T: Copy> List<'a, T> {
    /// A list to encode.
    pub const fn from_slice(items: &'a [T]) -> Self {
        List(Repr::Items(items))
    }
}

impl<'a, T: ListItem<'a>> List<'a, T> {
    /// Validates every item of `bytes`; at least one is required.
    pub(crate) fn decode(bytes: &'a [u8], variant: u8) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            T::read_item(&mut rest, variant)?;
        }
        Ok(List(Repr::Encoded(bytes, variant)))
    }

    /// Calls `f` on each item in order, stopping at the first error; a slice
    /// is walked directly rather than through [`ListIter`]'s two-way match.
    #[inline]
    pub(crate) fn try_for_each<E>(&self, f: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
        match self.0 {
            Repr::Items(items) => items.iter().copied().try_for_each(f),
            Repr::Encoded(..) => self.iter().try_for_each(f),
        }
    }

    /// Calls `f` on each item in order.
    #[inline]
    pub(crate) fn for_each(&self, f: impl FnMut(T)) {
        match self.0 {
            Repr::Items(items) => items.iter().copied().for_each(f),
            Repr::Encoded(..) => self.iter().for_each(f),
        }
    }

    /// The items in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter(match self.0 {
            Repr::Encoded(b, variant) => IterRepr::Encoded(b, variant),
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

impl<'a, T: ListItem<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: ListItem<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: ListItem<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: ListItem<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

enum IterRepr<'a, T> {
    Encoded(&'a [u8], u8),
    Items(core::slice::Iter<'a, T>),
}

/// Iterator over a [`List`].
pub struct ListIter<'a, T>(IterRepr<'a, T>);

impl<'a, T: ListItem<'a>> Iterator for ListIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.0 {
            IterRepr::Encoded([], _) => None,
            // Validated on decode: an error cannot occur, and stopping keeps
            // the iterator panic-free regardless.
            IterRepr::Encoded(b, variant) => match T::read_item(b, *variant) {
                Ok(item) => Some(item),
                Err(_) => {
                    *b = &[];
                    None
                }
            },
            IterRepr::Items(it) => it.next().copied(),
        }
    }
}

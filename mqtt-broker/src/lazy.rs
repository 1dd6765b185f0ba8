//! Containers that take one pointer and hold no allocation until something
//! is put in them, and give it back once they are empty again.
//!
//! A connection's task carries several queues that most connections never
//! use (acknowledgements held for a store sync or the cluster) or use for a
//! moment. Every byte of the task is kept for the whole life of every idle
//! connection, and tokio sizes task cells in 128-byte steps; an empty
//! `VecDeque` or `Vec` is 24 to 32 bytes, these are 8.

use std::collections::VecDeque;

/// A `VecDeque` that is `None` while empty.
// The box is the point: one pointer in the task instead of the deque's 32
// bytes (clippy's box_collection assumes the box only adds an indirection).
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(crate) struct LazyDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        LazyDeque(None)
    }
}

impl<T> LazyDeque<T> {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub fn push_back(&mut self, item: T) {
        self.0.get_or_insert_default().push_back(item);
    }

    pub fn front_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.front_mut()
    }

    pub fn back_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()?.back_mut()
    }

    /// The first item; the allocation goes with the last one.
    pub fn pop_front(&mut self) -> Option<T> {
        let q = self.0.as_mut()?;
        let item = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        item
    }
}

/// A `Vec` that is `None` while empty.
// One pointer instead of the vector's 24 bytes, as above.
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(crate) struct LazyVec<T>(Option<Box<Vec<T>>>);

impl<T> Default for LazyVec<T> {
    fn default() -> Self {
        LazyVec(None)
    }
}

impl<T> LazyVec<T> {
    pub fn push(&mut self, item: T) {
        self.0.get_or_insert_default().push(item);
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    /// Takes everything out, leaving it unallocated.
    pub fn take(&mut self) -> Vec<T> {
        self.0.take().map(|v| *v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deque allocates on its first item and frees on its last; order is
    /// kept.
    #[test]
    fn deque_allocates_only_while_it_holds_items() {
        let mut q = LazyDeque::default();
        assert!(q.is_empty() && q.0.is_none() && q.front_mut().is_none());
        q.push_back(1);
        q.push_back(2);
        *q.back_mut().unwrap() += 10;
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [1, 12]);
        assert_eq!(q.pop_front(), Some(1));
        assert!(q.0.is_some());
        assert_eq!(q.pop_front(), Some(12));
        assert!(q.is_empty() && q.0.is_none());
        assert_eq!(q.pop_front(), None);
        assert_eq!(std::mem::size_of::<LazyDeque<(u64, u64)>>(), 8);
    }

    /// A vec hands over its items and is left unallocated.
    #[test]
    fn vec_take_leaves_it_unallocated() {
        let mut v = LazyVec::default();
        assert!(v.take().is_empty());
        v.push(1u16);
        v.push(2);
        assert_eq!(v.take(), [1, 2]);
        assert!(v.0.is_none());
    }
}

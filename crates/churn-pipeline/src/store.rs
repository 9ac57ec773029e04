//! The engine's customer table: values in slots of one `Vec`, found by customer id through a
//! `hashbrown::HashTable` of slot numbers.
//!
//! Why not a `HashMap<String, Customer>`: at 1 M customers a hash map runs at about half load,
//! so every ~190-byte entry costs twice its size, and each id is a separate heap allocation
//! (24 bytes of `String` plus a 32-byte malloc chunk). Here the values sit densely in a `Vec`
//! (growth is the only slack), the index costs 5 bytes per bucket (a `u32` and a control
//! byte), and ids up to 24 bytes are stored inline ([`CompactString`]). Slot numbers are
//! stable: the engine's dirty and changed lists hold them instead of cloned ids. A removed
//! slot is reused by a later insert, so those lists must drop removed slots before the next
//! insert (the engine does, right after every removal).

use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::HashTable;

/// A slot number (stable while the customer is in the table).
pub type Slot = u32;

#[derive(Debug)]
struct Entry<T> {
    key: CompactString,
    value: T,
}

/// The id in slot `s` (None for a free slot).
fn key_at<T>(slots: &[Option<Entry<T>>], s: Slot) -> Option<&str> {
    slots
        .get(s as usize)
        .and_then(|e| e.as_ref())
        .map(|e| e.key.as_str())
}

/// Values keyed by string ids, in reusable slots. See module docs.
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Option<Entry<T>>>,
    free: Vec<Slot>,
    index: HashTable<Slot>,
    hasher: foldhash::fast::RandomState,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<T> Table<T> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Slot of `key`.
    pub fn find(&self, key: &str) -> Option<Slot> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &str) -> Option<Slot> {
        self.index
            .find(hash, |&s| key_at(&self.slots, s) == Some(key))
            .copied()
    }

    /// Slot of `key`, inserting `make()` first if it is not there.
    pub fn find_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> T) -> Slot {
        let h = self.hasher.hash_one(key);
        if let Some(s) = self.find_hashed(h, key) {
            return s;
        }
        let entry = Entry {
            key: CompactString::from(key),
            value: make(),
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(entry);
                s
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as Slot
            }
        };
        // The index may grow: it rehashes its slots' ids.
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(h, s, |&t| {
            key_at(slots, t).map_or(0, |k| hasher.hash_one(k))
        });
        s
    }

    /// Id and value in slot `s` (None for a free slot).
    pub fn get(&self, s: Slot) -> Option<(&str, &T)> {
        self.slots
            .get(s as usize)
            .and_then(|e| e.as_ref())
            .map(|e| (e.key.as_str(), &e.value))
    }

    /// Value in slot `s` (None for a free slot).
    pub fn get_mut(&mut self, s: Slot) -> Option<&mut T> {
        self.slots
            .get_mut(s as usize)
            .and_then(|e| e.as_mut())
            .map(|e| &mut e.value)
    }

    /// True if slot `s` holds a value.
    pub fn contains(&self, s: Slot) -> bool {
        self.get(s).is_some()
    }

    /// Remove the value in slot `s`; returns its id and value. The slot is reused later.
    pub fn remove(&mut self, s: Slot) -> Option<(CompactString, T)> {
        let entry = self.slots.get_mut(s as usize)?.take()?;
        let h = self.hasher.hash_one(entry.key.as_str());
        if let Ok(e) = self.index.find_entry(h, |&t| t == s) {
            e.remove();
        }
        self.free.push(s);
        Some((entry.key, entry.value))
    }

    /// Every (slot, id, value), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &str, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as Slot, e.key.as_str(), &e.value)))
    }

    /// Every (slot, id, value) mutably, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &str, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, e)| {
            e.as_mut()
                .map(|e| (i as Slot, e.key.as_str(), &mut e.value))
        })
    }

    /// Bytes held by the table itself: the slots (with their growth slack and free slots), the
    /// index and ids too long to be inline. Heap data owned by the values comes on top.
    pub fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<Option<Entry<T>>>();
        let heap_keys: usize = self
            .slots
            .iter()
            .flatten()
            .filter(|e| e.key.is_heap_allocated())
            .map(|e| e.key.capacity())
            .sum();
        self.slots.capacity() * slot
            + self.free.capacity() * std::mem::size_of::<Slot>()
            // A HashTable bucket is the value plus one control byte.
            + self.index.capacity() * (std::mem::size_of::<Slot>() + 1)
            + heap_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_reused_after_removal() {
        let mut t: Table<u32> = Table::default();
        let ids: Vec<String> = (0..1000).map(|i| format!("customer-{i}")).collect();
        let slots: Vec<Slot> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| t.find_or_insert_with(id, || i as u32))
            .collect();
        assert_eq!(t.len(), 1000);
        // Lookups find the same slot; inserting again does not duplicate.
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.find(id), Some(slots[i]));
            assert_eq!(t.find_or_insert_with(id, || 9999), slots[i]);
            assert_eq!(t.get(slots[i]), Some((id.as_str(), &(i as u32))));
        }
        assert_eq!(t.find("nobody"), None);
        // Remove every third; the others keep their slots and values.
        for i in (0..1000).step_by(3) {
            assert_eq!(
                t.remove(slots[i]).map(|(k, v)| (k.to_string(), v)),
                Some((ids[i].clone(), i as u32))
            );
            assert_eq!(t.remove(slots[i]), None, "removed once");
        }
        assert_eq!(t.len(), 666);
        for (i, id) in ids.iter().enumerate() {
            let want = (i % 3 != 0).then_some(slots[i]);
            assert_eq!(t.find(id), want, "{id}");
            assert_eq!(t.contains(slots[i]), want.is_some());
        }
        // New ids reuse the freed slots: the slot vector does not grow.
        let cap = t.slots.len();
        for i in 0..334 {
            t.find_or_insert_with(&format!("new-{i}"), || i);
        }
        assert_eq!(t.slots.len(), cap);
        assert_eq!(t.len(), 1000);
        assert_eq!(t.iter().count(), 1000);
        for v in t.iter_mut().map(|(_, _, v)| v) {
            *v += 1;
        }
        assert_eq!(t.get(t.find("new-0").expect("there")), Some(("new-0", &1)));
        // A long id lives on the heap and is counted.
        let long = "x".repeat(100);
        let before = t.bytes();
        t.find_or_insert_with(&long, || 0);
        assert!(t.bytes() >= before + 100);
        assert_eq!(
            t.get(t.find(&long).expect("there")).map(|(k, _)| k.len()),
            Some(100)
        );
    }
}

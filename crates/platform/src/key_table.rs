//! API keys by their SHA-256. Every party gets a key when made, so a full
//! day's 8 million parties hold 8 million: in an ordered map of (hash,
//! grant) each took ~110 bytes, here a plain key (full rights, no expiry:
//! all but a few) takes ~42.
//!
//! Plain keys are kept in 65,536 shards by the hash's top 16 bits, each a
//! `Vec` sorted by hash and grown an eighth at a time; a hash's other bits
//! are spread evenly, so a lookup guesses the place by proportion and reads
//! a cache line or two. Restricted and expiring keys, few, are in an
//! ordered map beside. Both serialize as one map in hash order, the same
//! bytes as the ordered map of every key they replace.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::access::KeyGrant;
use crate::units::PartyNumber;

pub(crate) type KeyHash = [u8; 32];

const SHARD_BITS: u32 = 16;

/// A key with full rights and no expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PlainKey {
    hash: KeyHash,
    party: PartyNumber,
}

impl PlainKey {
    fn grant(self) -> KeyGrant {
        KeyGrant { party: self.party, read_only: false, expires_at: None }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct KeyTable {
    /// Empty until the first plain key, then `1 << SHARD_BITS` shards.
    plain: Vec<Vec<PlainKey>>,
    /// Keys that are read-only or expire.
    others: BTreeMap<KeyHash, KeyGrant>,
    plain_len: usize,
}

fn shard_of(hash: &KeyHash) -> usize {
    usize::from(u16::from_be_bytes([hash[0], hash[1]])) >> (16 - SHARD_BITS)
}

/// The hash's bits after the shard's, as a number to guess a place by.
fn position_bits(hash: &KeyHash) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[2..10]);
    u64::from_be_bytes(bytes)
}

fn is_plain(grant: &KeyGrant) -> bool {
    !grant.read_only && grant.expires_at.is_none()
}

impl KeyTable {
    pub(crate) fn len(&self) -> usize {
        self.plain_len + self.others.len()
    }

    pub(crate) fn get(&self, hash: &KeyHash) -> Option<KeyGrant> {
        if let Some(grant) = self.others.get(hash) {
            return Some(*grant);
        }
        let shard = self.plain.get(shard_of(hash))?;
        shard.get(place_in(shard, hash)).filter(|key| key.hash == *hash).map(|key| key.grant())
    }

    pub(crate) fn contains(&self, hash: &KeyHash) -> bool {
        self.get(hash).is_some()
    }

    /// Files `grant` under `hash`, in place of any grant filed there.
    pub(crate) fn insert(&mut self, hash: KeyHash, grant: KeyGrant) {
        self.remove(&hash);
        if !is_plain(&grant) {
            self.others.insert(hash, grant);
            return;
        }
        if self.plain.is_empty() {
            self.plain = vec![Vec::new(); 1 << SHARD_BITS];
        }
        let shard = &mut self.plain[shard_of(&hash)];
        if shard.len() == shard.capacity() {
            // An eighth at a time, not double: the shards together are
            // hundreds of MB at a full day's size.
            shard.reserve_exact((shard.len() / 8).max(4));
        }
        let place = place_in(shard, &hash);
        shard.insert(place, PlainKey { hash, party: grant.party });
        self.plain_len += 1;
    }

    pub(crate) fn remove(&mut self, hash: &KeyHash) -> Option<KeyGrant> {
        if let Some(grant) = self.others.remove(hash) {
            return Some(grant);
        }
        let shard = self.plain.get_mut(shard_of(hash))?;
        let place = place_in(shard, hash);
        if shard.get(place).is_none_or(|key| key.hash != *hash) {
            return None;
        }
        self.plain_len -= 1;
        Some(shard.remove(place).grant())
    }

    /// Keeps the keys whose grant `keep` approves (a walk of every key).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&KeyGrant) -> bool) {
        self.others.retain(|_, grant| keep(grant));
        for shard in &mut self.plain {
            shard.retain(|key| keep(&key.grant()));
        }
        self.plain_len = self.plain.iter().map(Vec::len).sum();
    }

    /// Every key, in hash order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (KeyHash, KeyGrant)> + '_ {
        let mut plain = self.plain.iter().flatten().map(|key| (key.hash, key.grant())).peekable();
        let mut others = self.others.iter().map(|(hash, grant)| (*hash, *grant)).peekable();
        std::iter::from_fn(move || match (plain.peek(), others.peek()) {
            (Some((low, _)), Some((high, _))) if low < high => plain.next(),
            (Some(_), None) => plain.next(),
            _ => others.next(),
        })
    }
}

/// Where `hash` is, or would go, in a sorted shard.
fn place_in(shard: &[PlainKey], hash: &KeyHash) -> usize {
    let guess = search::proportional_guess(position_bits(hash), 0, u64::MAX, shard.len());
    search::partition_point_near(shard, guess, |key| key.hash < *hash)
}

impl PartialEq for KeyTable {
    fn eq(&self, other: &KeyTable) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for KeyTable {}

impl Serialize for KeyTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (hash, grant) in self.iter() {
            map.serialize_entry(&hash, &grant)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for KeyTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyTable, D::Error> {
        deserializer.deserialize_map(KeyTableVisitor)
    }
}

struct KeyTableVisitor;

impl<'de> Visitor<'de> for KeyTableVisitor {
    type Value = KeyTable;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a map of key hashes to grants")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyTable, A::Error> {
        let mut table = KeyTable::default();
        // In hash order, as written: each plain key goes at its shard's end.
        while let Some((hash, grant)) = map.next_entry::<KeyHash, KeyGrant>()? {
            table.insert(hash, grant);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Timestamp;
    use proptest::prelude::*;

    fn hash(shard: u8, low: u8) -> KeyHash {
        let mut hash = [0u8; 32];
        hash[0] = shard;
        hash[31] = low;
        hash
    }

    fn grant(party: u64, kind: u8) -> KeyGrant {
        KeyGrant {
            party: PartyNumber::new(party),
            read_only: kind == 1,
            expires_at: (kind == 2).then(|| Timestamp::from_nanos(party)),
        }
    }

    proptest! {
        /// The table behaves as the ordered map it replaces: the same
        /// answers, the same order, the same bytes.
        #[test]
        fn behaves_like_an_ordered_map(
            operations in prop::collection::vec((0u8..3, 0u8..3, any::<u8>(), 1u64..50, 0u8..3), 1..400),
        ) {
            let mut table = KeyTable::default();
            let mut model: BTreeMap<KeyHash, KeyGrant> = BTreeMap::new();
            for (operation, shard, low, party, kind) in operations {
                let key = hash(shard, low);
                match operation {
                    0 | 1 => {
                        table.insert(key, grant(party, kind));
                        model.insert(key, grant(party, kind));
                    }
                    _ => prop_assert_eq!(table.remove(&key), model.remove(&key)),
                }
                prop_assert_eq!(table.get(&key), model.get(&key).copied());
                prop_assert_eq!(table.len(), model.len());
            }
            prop_assert!(table.iter().eq(model.iter().map(|(hash, grant)| (*hash, *grant))));
            let bytes = postcard::to_allocvec(&table).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&model).unwrap());
            prop_assert_eq!(postcard::from_bytes::<KeyTable>(&bytes).unwrap(), table.clone());
            table.retain(|grant| grant.party.get() % 2 == 0);
            model.retain(|_, grant| grant.party.get() % 2 == 0);
            prop_assert!(table.iter().eq(model.iter().map(|(hash, grant)| (*hash, *grant))));
            prop_assert_eq!(table.len(), model.len());
        }
    }

    #[test]
    fn a_plain_key_takes_about_forty_bytes() {
        let mut table = KeyTable::default();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for party in 1..=1_000_000u64 {
            let mut key = [0u8; 32];
            for chunk in key.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_be_bytes());
            }
            table.insert(key, grant(party, 0));
        }
        let bytes: usize = table.plain.iter().map(|shard| shard.capacity() * size_of::<PlainKey>()).sum();
        let per_key = bytes / table.len();
        assert!((40..=46).contains(&per_key), "{per_key} bytes a key");
        assert!(table.plain.iter().all(|shard| shard.is_sorted_by_key(|key| key.hash)));
    }
}

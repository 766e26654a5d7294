//! Public ids: what the API calls a party, a trade, a red packet. An id is
//! its kind's prefix and 32 hex digits: the object's number, with its kind,
//! encrypted under a key derived from the platform's secret (AES-128 of one
//! block: a keyed permutation, so every number has exactly one id and the
//! id gives the number back).
//!
//! Why not the number: ids are capabilities. Anyone holding a red packet's
//! id may claim it, and numbers from one counter (`usr_1, mch_2, trd_3…`)
//! are found by counting — and tell the world the platform's volume. An id
//! here is one of 2^128 blocks of which one in 2^64 decrypts to a valid
//! kind tag, so guessing one that exists is hopeless, and ids of different
//! kinds never stand in for each other. The key comes from the platform's
//! journaled secret: every node and every replay gives the same ids.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What an id names: each kind has its prefix and its tag in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    User,
    Merchant,
    Trade,
    Refund,
    Transfer,
    Withdrawal,
    TopUp,
    Loan,
    Campaign,
    Coupon,
    RedPacket,
    Event,
    FundOrder,
    /// A statement entry: a position in the ledger's history.
    Entry,
    /// An Alipay-style notification.
    Notification,
    /// A merchant's webhook endpoint.
    Endpoint,
    Staff,
    /// A line of the audit log.
    Audit,
    /// A profit-sharing request on a trade (its settle number).
    Split,
    Dispute,
    /// A pre-authorisation (its `auth_no`).
    Freeze,
    /// An operation on a freeze (its `operation_id`).
    FreezeOperation,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::User => "usr_",
            IdKind::Merchant => "mch_",
            IdKind::Trade => "trd_",
            IdKind::Refund => "rfd_",
            IdKind::Transfer => "trf_",
            IdKind::Withdrawal => "wdr_",
            IdKind::TopUp => "top_",
            IdKind::Loan => "loan_",
            IdKind::Campaign => "cmp_",
            IdKind::Coupon => "cpn_",
            IdKind::RedPacket => "rp_",
            IdKind::Event => "evt_",
            IdKind::FundOrder => "fnd_",
            IdKind::Entry => "ent_",
            IdKind::Notification => "ntf_",
            IdKind::Endpoint => "we_",
            IdKind::Staff => "stf_",
            IdKind::Audit => "aud_",
            IdKind::Split => "spl_",
            IdKind::Dispute => "dsp_",
            IdKind::Freeze => "frz_",
            IdKind::FreezeOperation => "fop_",
        }
    }

    /// The kind's mark inside the encrypted block (never changes: ids
    /// already given out must keep meaning the same object).
    fn tag(self) -> u8 {
        match self {
            IdKind::User => 1,
            IdKind::Merchant => 2,
            IdKind::Trade => 3,
            IdKind::Refund => 4,
            IdKind::Transfer => 5,
            IdKind::Withdrawal => 6,
            IdKind::TopUp => 7,
            IdKind::Loan => 8,
            IdKind::Campaign => 9,
            IdKind::Coupon => 10,
            IdKind::RedPacket => 11,
            IdKind::Event => 12,
            IdKind::FundOrder => 13,
            IdKind::Entry => 14,
            IdKind::Notification => 15,
            IdKind::Endpoint => 16,
            IdKind::Staff => 17,
            IdKind::Audit => 18,
            IdKind::Split => 19,
            IdKind::Dispute => 20,
            IdKind::Freeze => 21,
            IdKind::FreezeOperation => 22,
        }
    }

    pub fn of_party(kind: platform::PartyKind) -> IdKind {
        match kind {
            platform::PartyKind::User => IdKind::User,
            platform::PartyKind::Merchant => IdKind::Merchant,
        }
    }
}

/// The hex digits after an id's prefix.
pub const ID_HEX_DIGITS: usize = 32;

/// Whether `text` has the form of an id of `kind` (whatever it names).
pub fn is_well_formed(kind: IdKind, text: &str) -> bool {
    text.strip_prefix(kind.prefix()).is_some_and(|digits| {
        digits.len() == ID_HEX_DIGITS && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Formats and reads public ids under one key.
pub struct PublicIds {
    cipher: Aes128,
}

impl PublicIds {
    /// Ids under the key derived from the platform's secret.
    pub fn new(secret: &[u8; 32]) -> PublicIds {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
        mac.update(b"zhifu public ids v1");
        let derived = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&derived[..16]);
        PublicIds { cipher: Aes128::new(&key.into()) }
    }

    pub fn format(&self, kind: IdKind, number: impl Into<u64>) -> String {
        let number: u64 = number.into();
        let mut block = [0u8; 16];
        block[0] = kind.tag();
        block[8..].copy_from_slice(&number.to_le_bytes());
        let mut block = block.into();
        self.cipher.encrypt_block(&mut block);
        format!("{}{}", kind.prefix(), hex::encode(block))
    }

    /// The number an id of this kind names; `None` for anything else
    /// (another kind's id, a made-up one, upper case, a bare number).
    pub fn parse(&self, kind: IdKind, text: &str) -> Option<u64> {
        if !is_well_formed(kind, text) {
            return None;
        }
        let digits = &text[kind.prefix().len()..];
        let mut block = [0u8; 16];
        hex::decode_to_slice(digits, &mut block).ok()?;
        let mut block = block.into();
        self.cipher.decrypt_block(&mut block);
        let expected_head = [kind.tag(), 0, 0, 0, 0, 0, 0, 0];
        if block[..8] != expected_head {
            return None;
        }
        let mut number = [0u8; 8];
        number.copy_from_slice(&block[8..]);
        Some(u64::from_le_bytes(number))
    }

    /// A user's or a merchant's id: the party's number and kind.
    pub fn parse_party(&self, text: &str) -> Option<(platform::PartyNumber, platform::PartyKind)> {
        use platform::PartyKind;
        [PartyKind::User, PartyKind::Merchant].into_iter().find_map(|kind| {
            self.parse(IdKind::of_party(kind), text).map(|number| (platform::PartyNumber::new(number), kind))
        })
    }
}

/// HMAC takes a key of any length: it cannot refuse this one.
#[allow(clippy::panic)]
fn unreachable_key() -> ! {
    panic!("HMAC refused a 32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_to_their_number_and_kind_only() {
        let ids = PublicIds::new(&[7; 32]);
        for number in [0, 1, 2, 99, u64::MAX] {
            let id = ids.format(IdKind::RedPacket, number);
            assert!(id.starts_with("rp_") && id.len() == 3 + ID_HEX_DIGITS, "{id}");
            assert_eq!(ids.parse(IdKind::RedPacket, &id), Some(number));
            assert_eq!(ids.parse(IdKind::Trade, &id.replacen("rp_", "trd_", 1)), None, "another kind's block");
            assert_eq!(ids.parse(IdKind::RedPacket, &id.to_uppercase().replacen("RP_", "rp_", 1)), None);
        }
        assert_eq!(ids.parse(IdKind::RedPacket, "rp_1"), None);
        assert_eq!(ids.parse(IdKind::RedPacket, &format!("rp_{}", "0".repeat(32))), None);
        let other = PublicIds::new(&[8; 32]);
        assert_eq!(other.parse(IdKind::RedPacket, &ids.format(IdKind::RedPacket, 5u64)), None, "another key");
    }

    #[test]
    fn neighbouring_numbers_give_unrelated_ids() {
        let ids = PublicIds::new(&[1; 32]);
        let (one, two) = (ids.format(IdKind::Trade, 1u64), ids.format(IdKind::Trade, 2u64));
        let same = one.bytes().zip(two.bytes()).skip(4).filter(|(a, b)| a == b).count();
        assert!(same < 12, "{one} {two}");
    }

    #[test]
    fn guessed_ids_name_nothing() {
        let ids = PublicIds::new(&[3; 32]);
        let found =
            (0..100_000u64).filter(|guess| ids.parse(IdKind::RedPacket, &format!("rp_{guess:032x}")).is_some()).count();
        assert_eq!(found, 0);
    }
}

//! Event ids are UUIDv7 so they sort by time. Ids of events derived from
//! another event are deterministic, so a redelivered input produces an output
//! with the same id and every consumer can drop the copy.
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A fresh UUIDv7 for an event caused by a client.
pub fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

/// The id of the `index`-th event derived from `cause_id`: a valid UUIDv7
/// that keeps the cause's timestamp and takes its other bits from a hash,
/// so the same cause and index always give the same id.
pub fn derived_event_id(cause_id: &str, index: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(cause_id.as_bytes());
    hasher.update(index.to_be_bytes());
    let digest = hasher.finalize();

    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    if let Ok(cause) = Uuid::parse_str(cause_id) {
        // The first 48 bits of a UUIDv7 are its unix-millisecond timestamp.
        bytes[..6].copy_from_slice(&cause.as_bytes()[..6]);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_deterministic_v7_and_distinct_per_index() {
        let cause = new_event_id();
        let first = derived_event_id(&cause, 0);
        assert_eq!(first, derived_event_id(&cause, 0));
        assert_ne!(first, derived_event_id(&cause, 1));
        let parsed = Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(
            &parsed.as_bytes()[..6],
            &Uuid::parse_str(&cause).unwrap().as_bytes()[..6]
        );
    }
}

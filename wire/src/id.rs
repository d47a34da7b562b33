//! Who a peer is: its node id, the 32-byte Ed25519 public key it proves in the handshake.
//!
//! Lives in `wire` because messages carry ids (DHT contacts) and every crate above needs the
//! same type and the same text form: 64 lowercase hex digits, stable across releases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight digits tell peers apart in logs; Display gives the whole id.
        write!(f, "NodeId({})", &hex::encode(&self.0[..4]))
    }
}

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 64 hex digits, got {0:?}")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<NodeId, ParseNodeIdError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| ParseNodeIdError(s.chars().take(80).collect()))?;
        Ok(NodeId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_bad_input() {
        let id = NodeId([0xab; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<NodeId>(), Ok(id));
        assert!("abcd".parse::<NodeId>().is_err());
        assert!("zz".repeat(32).parse::<NodeId>().is_err());
    }
}

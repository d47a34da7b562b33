//! Target `contacts_file`: the saved contacts file (`data_dir/contacts.dat`), which a crash,
//! a full disk or another program may have left in any state.
//!
//! The input is the file's bytes, tried twice: as it is, and with its last 32 bytes replaced
//! by the right checksum of the rest, so that the fuzzer reaches the entry parser behind the
//! checksum. Checked: decoding never panics; a file it accepts holds at most the cap and is
//! the only encoding of what it holds (it re-encodes to the same bytes).

use node::dht::contacts::{CONTACTS_MAX, decode, encode};

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    check(data);
    if let Some(body) = data.len().checked_sub(32).map(|n| &data[..n]) {
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(blake3::hash(body).as_bytes());
        check(&fixed);
    }
}

fn check(bytes: &[u8]) {
    let Ok(peers) = decode(bytes) else {
        return;
    };
    assert!(
        peers.len() <= CONTACTS_MAX,
        "{} contacts accepted",
        peers.len()
    );
    assert_eq!(
        encode(&peers),
        bytes,
        "an accepted file is not the encoding of its contacts"
    );
}

//! What can go wrong, typed: the node maps a [`SendError`] to a wire refusal
//! ([`SendError::refusal`]) or an HTTP status (429 with `Retry-After` for quotas), and a
//! [`StoreError`] to 503 (I/O) or a refusal to start (corruption found on open).

use std::path::PathBuf;
use std::time::Duration;

use wire::mailbox::Refusal;

/// Which quota a send ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    /// The sender's share of this mailbox.
    Sender,
    /// The share of this mailbox of a principal behind the sender (`Principal`).
    Principal,
    /// The mailbox as a whole.
    Mailbox,
    /// The whole store.
    Store,
}

/// A send that was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The payload is over `wire::mailbox::PAYLOAD_MAX`.
    #[error("payload of {len} bytes, at most {max} allowed")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The idempotency key is empty or over its limit.
    #[error("idempotency key of {0} bytes is invalid")]
    BadKey(usize),
    /// Over a quota; try again after `retry_after`.
    #[error("{scope:?} quota exceeded")]
    Quota {
        /// Which quota.
        scope: QuotaScope,
        /// Advice for `Retry-After`.
        retry_after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SendError {
    /// The wire refusal to answer a SEND with.
    pub fn refusal(&self) -> Refusal {
        match self {
            SendError::TooLarge { .. } => Refusal::TooLarge,
            // The wire refuses an invalid key on decode; one reaching us is the caller's.
            SendError::BadKey(_) => Refusal::TooLarge,
            // To the sender, a principal is a sender behind it: the same refusal.
            SendError::Quota {
                scope: QuotaScope::Sender | QuotaScope::Principal,
                ..
            } => Refusal::SenderQuota,
            SendError::Quota {
                scope: QuotaScope::Mailbox,
                ..
            } => Refusal::MailboxQuota,
            SendError::Quota {
                scope: QuotaScope::Store,
                ..
            } => Refusal::StoreFull,
            SendError::Store(_) => Refusal::Unavailable,
        }
    }

    /// How long the sender should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Quota { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The store itself failed, or its files are not what it wrote.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed. After a failed journal write or fsync the shard's changes
    /// are still made in memory but answered with [`StoreError::Failed`] (not durable, so
    /// not acknowledged), until maintenance rewrites the journal from that memory.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A journal record in the middle of a file fails its checksum or does not parse, or a
    /// length is one no record has or runs past the end with records after it: not a torn
    /// write (those are only ever the last record). The store refuses to open rather than
    /// silently lose acknowledged messages, unless told to salvage (`Config::salvage`).
    #[error("journal {path} is corrupt at byte {offset}: {why}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// An earlier write of this shard's journal failed; it takes no writes until the
    /// store's maintenance has rewritten it (every few seconds, once the disk has room).
    #[error("journal {0} failed earlier and takes no writes until it is rewritten")]
    Failed(PathBuf),
    /// The configuration is unusable (or does not match the directory).
    #[error("bad mailbox store configuration: {0}")]
    BadConfig(String),
}

impl StoreError {
    /// The same error for another caller (I/O errors are not `Clone`: their kind and text
    /// are kept).
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Io { op, path, source } => StoreError::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Corrupt { path, offset, why } => StoreError::Corrupt {
                path: path.clone(),
                offset: *offset,
                why,
            },
            StoreError::Failed(p) => StoreError::Failed(p.clone()),
            StoreError::BadConfig(s) => StoreError::BadConfig(s.clone()),
        }
    }
}

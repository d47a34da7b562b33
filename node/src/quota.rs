//! Per-tenant write quotas: bytes written in all, and bytes per second.
//!
//! A capability token may name a tenant with its quota (`caps::TenantQuota`); every write
//! made with such a token, through the gateway or as a replica push, draws on that tenant's
//! account here. Bytes are reserved before they are accepted (the announced size up front,
//! or each piece of a body of unknown size as it arrives), committed when the object is
//! durable and returned when the write fails, so concurrent writes of one tenant can never
//! pass its quota together. The rate is a token bucket one second deep that a write larger
//! than it may overdraw (charged whole, paid back before the next write), so the average
//! holds for any object size. A refusal says how long to wait (`Retry-After`).
//!
//! Accounts live in memory and, on a node with a data directory, in `tenants.json`, written
//! atomically a few seconds after a change, so a restart does not reset what a tenant used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::caps::TenantQuota;

/// Tenant accounts kept at most; past it, a new tenant's write is refused.
pub const TENANTS_MAX: usize = 100_000;

/// Why a tenant's write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The write would take the tenant past the bytes its quota allows.
    #[error("tenant {tenant} has written {used} of its {max} bytes; {need} more do not fit")]
    Full {
        /// The tenant.
        tenant: String,
        /// Bytes used (written and reserved).
        used: u64,
        /// The quota.
        max: u64,
        /// Bytes the write needs.
        need: u64,
    },
    /// The tenant writes faster than its rate allows.
    #[error("tenant {tenant} is over its rate of {rate} bytes per second")]
    Rate {
        /// The tenant.
        tenant: String,
        /// Its rate.
        rate: u64,
        /// When the bucket allows a write again.
        retry_after: Duration,
    },
    /// Too many tenants have accounts on this node.
    #[error("this node keeps no more tenant accounts")]
    TooManyTenants,
}

impl QuotaError {
    /// Seconds a client should wait before trying again.
    pub fn retry_after_secs(&self) -> u32 {
        match self {
            QuotaError::Rate { retry_after, .. } => {
                u32::try_from(retry_after.as_secs() + 1).unwrap_or(u32::MAX)
            }
            // Space comes back only if the operator raises the quota: ask for patience.
            QuotaError::Full { .. } | QuotaError::TooManyTenants => 60,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    /// Bytes committed (durable writes).
    used: u64,
    /// Bytes reserved by writes in progress.
    #[serde(skip)]
    reserved: u64,
    /// The rate bucket; negative after a write larger than a second's worth.
    #[serde(skip)]
    tokens: f64,
    #[serde(skip)]
    refilled: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    accounts: BTreeMap<String, Account>,
    dirty: bool,
}

/// The tenant accounts of one node. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    state: Arc<Mutex<State>>,
    file: Option<Arc<PathBuf>>,
}

/// Bytes a write holds in its tenant's account; returned unless committed.
#[derive(Debug)]
pub struct Reservation {
    quotas: Quotas,
    quota: TenantQuota,
    bytes: u64,
}

impl Quotas {
    /// Accounts kept only in memory (amnesia mode, tests).
    pub fn in_memory() -> Quotas {
        Quotas::default()
    }

    /// Accounts loaded from (and saved to) `file`; a missing file is an empty start, a
    /// malformed one an error that names it.
    pub fn open(file: PathBuf) -> std::io::Result<Quotas> {
        let accounts = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", file.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Quotas {
            state: Arc::new(Mutex::new(State {
                accounts,
                dirty: false,
            })),
            file: Some(Arc::new(file)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes a tenant has written (committed).
    pub fn used(&self, tenant: &str) -> u64 {
        self.lock().accounts.get(tenant).map_or(0, |a| a.used)
    }

    /// Reserves `bytes` for a write of `quota`'s tenant, or says why not.
    pub fn reserve(&self, quota: &TenantQuota, bytes: u64) -> Result<Reservation, QuotaError> {
        let mut r = Reservation {
            quotas: self.clone(),
            quota: quota.clone(),
            bytes: 0,
        };
        r.grow(bytes)?;
        Ok(r)
    }

    fn take(&self, quota: &TenantQuota, bytes: u64) -> Result<(), QuotaError> {
        let now = Instant::now();
        let mut st = self.lock();
        let known = st.accounts.len();
        let a = match st.accounts.get_mut(&quota.name) {
            Some(a) => a,
            None if known >= TENANTS_MAX => return Err(QuotaError::TooManyTenants),
            None => st.accounts.entry(quota.name.clone()).or_default(),
        };
        let used = a.used + a.reserved;
        if used.saturating_add(bytes) > quota.bytes_max {
            return Err(QuotaError::Full {
                tenant: quota.name.clone(),
                used,
                max: quota.bytes_max,
                need: bytes,
            });
        }
        let rate = quota.bytes_per_second as f64;
        let depth = rate.max(1.0);
        let tokens = match a.refilled {
            Some(t) => (a.tokens + now.duration_since(t).as_secs_f64() * rate).min(depth),
            None => depth,
        };
        // A write may start once the bucket has room for it, or is full (a write larger
        // than a second's worth overdraws it).
        if tokens < (bytes as f64).min(depth) {
            let wait = if rate > 0.0 {
                ((bytes as f64).min(depth) - tokens) / rate
            } else {
                3600.0
            };
            a.tokens = tokens;
            a.refilled = Some(now);
            return Err(QuotaError::Rate {
                tenant: quota.name.clone(),
                rate: quota.bytes_per_second,
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        a.tokens = tokens - bytes as f64;
        a.refilled = Some(now);
        a.reserved += bytes;
        Ok(())
    }

    fn settle(&self, tenant: &str, reserved: u64, committed: u64) {
        let mut st = self.lock();
        if let Some(a) = st.accounts.get_mut(tenant) {
            a.reserved = a.reserved.saturating_sub(reserved);
            a.used = a.used.saturating_add(committed);
        }
        if committed > 0 {
            st.dirty = true;
        }
    }

    /// Writes the accounts to their file if they changed (atomically: temp file, fsync,
    /// rename). Blocking.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let json = {
            let mut st = self.lock();
            if !st.dirty {
                return Ok(());
            }
            st.dirty = false;
            serde_json::to_vec(&st.accounts).map_err(std::io::Error::other)?
        };
        let tmp = file.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, file.as_ref())
    }

    /// Saves the accounts every `every` until the returned task is aborted.
    pub fn keep_saved(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let q = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let q2 = q.clone();
                match tokio::task::spawn_blocking(move || q2.save()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "saving tenant accounts failed"),
                    Err(e) => tracing::warn!(error = %e, "saving tenant accounts failed"),
                    Ok(Ok(())) => {}
                }
            }
        })
    }
}

impl Reservation {
    /// Reserves `bytes` more (a body of unknown size, piece by piece).
    pub fn grow(&mut self, bytes: u64) -> Result<(), QuotaError> {
        self.quotas.take(&self.quota, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// The write is durable: its bytes count as used.
    pub fn commit(mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.quotas.settle(&self.quota.name, bytes, bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.quotas.settle(&self.quota.name, self.bytes, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(name: &str, max: u64, rate: u64) -> TenantQuota {
        TenantQuota {
            name: name.into(),
            bytes_max: max,
            bytes_per_second: rate,
        }
    }

    #[test]
    fn concurrent_writes_cannot_pass_the_quota_together() {
        let q = Quotas::in_memory();
        let acme = quota("acme", 1000, 1 << 30);
        let a = q.reserve(&acme, 600).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            q.reserve(&acme, 600),
            Err(QuotaError::Full { .. })
        ));
        // A failed write gives its bytes back; a committed one keeps them.
        drop(a);
        let b = q.reserve(&acme, 600).unwrap_or_else(|e| panic!("{e}"));
        b.commit();
        assert_eq!(q.used("acme"), 600);
        assert!(matches!(
            q.reserve(&acme, 401),
            Err(QuotaError::Full { .. })
        ));
        assert!(q.reserve(&acme, 400).is_ok());
        // Another tenant has its own account.
        assert!(q.reserve(&quota("other", 1000, 1 << 30), 1000).is_ok());
    }

    #[test]
    fn the_rate_is_a_bucket_a_large_write_overdraws() {
        let q = Quotas::in_memory();
        let slow = quota("slow", u64::MAX, 1000);
        // A full bucket lets a write ten times its depth start, then makes the next wait.
        let big = q.reserve(&slow, 10_000).unwrap_or_else(|e| panic!("{e}"));
        big.commit();
        match q.reserve(&slow, 10) {
            Err(e @ QuotaError::Rate { .. }) => assert!(e.retry_after_secs() >= 9),
            other => panic!("{other:?}"),
        }
        let mut piecewise = Quotas::in_memory()
            .reserve(&slow, 500)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(piecewise.grow(500).is_ok());
        assert!(matches!(piecewise.grow(500), Err(QuotaError::Rate { .. })));
    }

    #[test]
    fn accounts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("tenants.json");
        let q = Quotas::open(file.clone()).unwrap_or_else(|e| panic!("{e}"));
        q.reserve(&quota("acme", 1000, 1 << 30), 700)
            .unwrap_or_else(|e| panic!("{e}"))
            .commit();
        q.save().unwrap_or_else(|e| panic!("{e}"));
        let again = Quotas::open(file.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.used("acme"), 700);
        std::fs::write(&file, b"not json").unwrap_or_else(|e| panic!("{e}"));
        assert!(Quotas::open(file).is_err());
    }
}

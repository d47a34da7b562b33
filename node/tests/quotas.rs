//! Tenant write quotas, carried in capability tokens and enforced at the gateway and on
//! replica pushes, over a real node on loopback: bytes in all, bytes per second, 429 with
//! `Retry-After`, one tenant never charged for another. Also the gateway's refusal of
//! bodies with a `Content-Encoding` and its case-insensitive `Bearer`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use node::caps::{Caveat, TenantQuota, Token};
use node::transport::NoApps;
use node::{Identity, Transport, TransportConfig};
use wire::object::{APP_PROTO_OBJECT, ObjectRequest};
use wire::{Status, message};

fn token(root: &[u8; 32], tenant: &str, bytes_max: u64, rate: u64) -> String {
    Token::mint(
        root,
        node::caps::tenant_nonce(root, [3; 8], tenant),
        vec![
            Caveat::Methods(vec!["PUT".into()]),
            Caveat::Tenant(TenantQuota {
                name: tenant.into(),
                bytes_max,
                bytes_per_second: rate,
            }),
        ],
    )
    .encode()
}

async fn put_as(url: &str, auth: String, body: Vec<u8>) -> Reply {
    request("PUT", url.to_string(), vec![("authorization", auth)], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_held_to_their_quotas() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, root) = gated_node(dir.path(), |_| {}).await;
    let url = format!("http://{}/o", node.ctx.http);

    // Bytes in all: 1 MB for acme.
    let acme = token(&root, "acme", 1_000_000, 1 << 30);
    let r = put_as(&url, format!("Bearer {acme}"), vec![1; 600_000]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = put_as(&url, format!("bearer {acme}"), vec![2; 600_000]).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "quota_exceeded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(node.ctx.objects.quotas.used("acme"), 600_000);
    // Another tenant is not charged for acme.
    let zed = token(&root, "zed", 1_000_000, 1 << 30);
    let r = put_as(&url, format!("BEARER {zed}"), vec![3; 600_000]).await;
    assert_eq!(
        r.status, 201,
        "the scheme is case-insensitive, and zed has its own account"
    );

    // Bytes per second: a write larger than a second's worth may start, the next waits.
    let slow = token(&root, "slow", 1 << 40, 100_000);
    let r = put_as(&url, format!("Bearer {slow}"), vec![4; 300_000]).await;
    assert_eq!(r.status, 201);
    let r = put_as(&url, format!("Bearer {slow}"), vec![5; 10_000]).await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 2, "Retry-After {wait}: about 2 s of debt");

    // A compressed body would be stored compressed under the hash of those bytes: refused.
    let r = request(
        "PUT",
        url.clone(),
        vec![
            ("authorization", format!("Bearer {zed}")),
            ("content-encoding", "gzip".into()),
        ],
        vec![6; 1000],
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["code"], "content_encoding");
    // Every header line counts, and every item of a list (RELIABILITY.md D5: a second
    // line used to slip through, and the compressed bytes were stored).
    for encodings in [
        vec!["identity", "gzip"],
        vec!["identity, zstd"],
        vec!["IDENTITY", "identity,br"],
    ] {
        let mut headers = vec![("authorization", format!("Bearer {zed}"))];
        headers.extend(
            encodings
                .iter()
                .map(|e| ("content-encoding", e.to_string())),
        );
        let r = request("PUT", url.clone(), headers, vec![6; 1000]).await;
        assert_eq!(r.status, 415, "{encodings:?}");
    }

    // A replica push with a tenant's capability draws on the same account.
    let pusher = Transport::bind(
        Arc::new(Identity::generate().unwrap()),
        TransportConfig::with_listen("127.0.0.1:0".parse().unwrap()),
        Arc::new(NoApps),
    )
    .unwrap();
    let to = peer(&node);
    pusher.connect(to.addr, Some(to.id)).await.unwrap();
    let data = vec![7u8; 500_000];
    let put = ObjectRequest::Put {
        hash: *blake3::hash(&data).as_bytes(),
        size: data.len() as u64,
    };
    let mut ex = pusher
        .open_exchange(to.id, APP_PROTO_OBJECT, Bytes::from(acme))
        .await
        .unwrap();
    let _ = ex.send(message::encode(&put), false).await;
    let _ = ex.send(Bytes::from(data), true).await;
    let (status, _) = ex.read_response(1024).await.unwrap();
    assert_eq!(status, Status::TooManyRequests, "acme has 400 KB left");
    assert_eq!(node.ctx.transport.stats().rejects("push_over_quota"), 1);
    assert_eq!(node.ctx.objects.quotas.used("acme"), 600_000);

    pusher.close().await;
    node.shutdown().await;
    // The accounts outlive a restart.
    let again = node::quota::Quotas::open(dir.path().join("n0").join("tenants.json")).unwrap();
    assert_eq!(again.used("acme"), 600_000);
    assert_eq!(again.used("zed"), 600_000);
}

/// Naming a tenant is not a narrowing a token's holder may add (attenuation needs no key):
/// a token minted without one, with acme's tenant caveat appended, is refused (401) and
/// charges acme nothing. Before, it wrote as acme: any token holder could spend any
/// tenant's quota and its share of the write slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holder_cannot_name_a_tenant() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (node, root) = gated_node(dir.path(), |_| {}).await;
    let url = format!("http://{}/o", node.ctx.http);
    let plain = Token::mint(&root, [5; 16], vec![Caveat::Methods(vec!["PUT".into()])]);
    let r = put_as(&url, format!("Bearer {}", plain.encode()), vec![1; 1000]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let posing = plain.attenuate(Caveat::Tenant(TenantQuota {
        name: "acme".into(),
        bytes_max: u64::MAX,
        bytes_per_second: u64::MAX,
    }));
    let r = put_as(&url, format!("Bearer {}", posing.encode()), vec![2; 1000]).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("not minted for"));
    assert_eq!(node.ctx.objects.quotas.used("acme"), 0);
    // acme's own token, minted for it, writes as acme.
    let acme = token(&root, "acme", 1_000_000, 1 << 30);
    let r = put_as(&url, format!("Bearer {acme}"), vec![3; 1000]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(node.ctx.objects.quotas.used("acme"), 1000);
    node.shutdown().await;
}

//! A stranger on OAP/1: a transport with a key no node knows, for the trust tests (what a
//! node does with requests from a peer outside its table).

use std::net::SocketAddr;
use std::sync::Arc;

use node::transport::NoApps;
use node::{Identity, Transport, TransportConfig};
use wire::NodeId;
use wire::mailbox::{APP_PROTO_MAILBOX, MailboxRequest, MailboxResponse};
use wire::message;

use crate::HarnessError;

/// A transport on loopback under the key `seed`, serving nothing, and the runtime it runs on.
pub fn stranger(seed: [u8; 32]) -> Result<(Transport, tokio::runtime::Runtime), HarnessError> {
    let unexpected = |why: String| HarnessError::Unexpected {
        what: "the stranger's transport".into(),
        why,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HarnessError::Io {
            what: "a runtime for the stranger".into(),
            source,
        })?;
    let identity = Identity::from_seed(seed).map_err(|e| unexpected(e.to_string()))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let t = rt
        .block_on(async {
            Transport::bind(
                Arc::new(identity),
                TransportConfig::with_listen(listen),
                Arc::new(NoApps),
            )
        })
        .map_err(|e| unexpected(e.to_string()))?;
    Ok((t, rt))
}

/// One mailbox request from `t` to the node `to`: (status code, decoded answer if any).
pub fn ask_mailbox(
    rt: &tokio::runtime::Runtime,
    t: &Transport,
    to: (SocketAddr, NodeId),
    req: &MailboxRequest,
) -> Result<(u16, Option<MailboxResponse>), HarnessError> {
    let unexpected = |why: String| HarnessError::Unexpected {
        what: format!("a mailbox request to {}", to.0),
        why,
    };
    rt.block_on(async {
        t.connect(to.0, Some(to.1))
            .await
            .map_err(|e| unexpected(e.to_string()))?;
        let (status, body) = t
            .request(to.1, APP_PROTO_MAILBOX, message::encode(req))
            .await
            .map_err(|e| unexpected(e.to_string()))?;
        Ok((status.code(), message::decode(&body).ok()))
    })
}

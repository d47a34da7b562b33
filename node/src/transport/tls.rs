//! TLS 1.3 for OAP/1: a self-signed Ed25519 certificate carries the node key, and custom
//! verifiers turn "is this certificate trusted" into "is this the node we meant".
//!
//! Both sides present a certificate (mutual authentication). A verifier accepts exactly one
//! self-signed certificate whose key is Ed25519, checks the TLS 1.3 handshake signature with
//! that key (so the peer holds the private key, not just a copy of the certificate), and then:
//! the dialer compares the key with the node id it dialed and refuses any other; the listener
//! learns the peer's id from it. No CA, no names, no validity dates: identity is the key.
//! The crypto provider is `ring`, chosen explicitly, never a process-wide default.
//!
//! ## Resumption and 0-RTT (`TransportConfig::zero_rtt`)
//!
//! Off, every connection proves its key afresh: no tickets are issued or kept. On, a
//! listener issues session tickets and accepts 0-RTT. A ticket is an id into the
//! listener's in-memory table of [`SERVER_SESSIONS`] sessions, taken on use (single use:
//! rustls accepts 0-RTT only with such tickets, RFC 8446 §8.1; a restart forgets them, and
//! the next dial is a full handshake). A dialer keeps the tickets of at most
//! [`SESSION_CACHE`] peers, filed under a server name made of the node id it dialed
//! ([`server_name`]), so a ticket is only ever offered to the node it came from; one shared
//! dialer configuration serves every such dial (rustls resumes only under the
//! configuration a session was made with). What that keeps true:
//!
//! - **Identity.** A resumed session does not show certificates again; rustls carries the
//!   peer's certificate from the session it resumes (the dialer's stored session, the
//!   listener's ticket table), and [`peer_id`] reads the id from it as before. That
//!   session is one where the verifier checked the key and the handshake signature, and the
//!   PSK binder proves the other end holds that session's resumption secret, which only the
//!   two original ends know: a ticket cannot be used to claim another id. A dialer files a
//!   ticket only under the id its verifier accepted, and still compares [`peer_id`] with the
//!   id it dialed once the handshake completes. A ticket the listener does not hold
//!   (another node, a restart, a ticket used already) means a full handshake, with both
//!   certificates verified.
//! - **Replay.** A recorded first flight replayed to the same node finds its ticket taken
//!   (single use) and gets a full handshake, its early data refused; a replay that wins the
//!   race against the real flight, or a future change of ticket store, must still be
//!   harmless. So only requests that are safe to repeat go early: HELLO, PING,
//!   and what the application declares with `InboundHandler::replay_safe` (the node: DHT
//!   PING, FIND_NODE, GET_PROVIDERS; never ADD_PROVIDER, objects or mail). A dialer sends
//!   anything else only after its handshake completed; a listener that receives anything
//!   else before the handshake completed holds it until it has, and a replayed flight never
//!   completes a handshake (that takes the client's Finished, keyed by the fresh ECDHE
//!   exchange and the PSK): held requests of a replay are never executed. An early
//!   connection enters the peer table only once its handshake completed, so a replay cannot
//!   displace the peer's real connection either.
//! - **Forward secrecy.** 0-RTT data is keyed by the PSK alone: whoever later learns a
//!   session's resumption secret (from either end's memory) can read early data sent under
//!   it. Early data is DHT reads (keys sought, our HELLO terms), never content,
//!   capabilities or mail.
//! - **0.5-RTT.** The listener answers early requests before the dialer's Finished arrives,
//!   keyed by the handshake (with fresh ECDHE): a request to a known peer costs one round trip.
//!   Its identity is the ticket's (above), not yet confirmed by the dialer's Finished; an
//!   answer to a replay goes to whoever sent it, encrypted under keys a replayer lacks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, PeerMisbehaved,
    SignatureScheme,
};
use wire::NodeId;

use super::error::TransportError;
use crate::identity::Identity;

/// The ALPN protocol id of OAP/1.
pub const ALPN: &[u8] = b"oap/1";
/// The server name we send when no session may be resumed; verifiers ignore it (identity
/// is the key, not a name).
pub(crate) const SERVER_NAME: &str = "macronode";
/// Most peers whose session tickets a transport keeps (rustls's in-memory store; the least
/// recently used goes first).
pub const SESSION_CACHE: usize = 1024;

/// Most sessions a listener keeps for its dialers to resume (rustls's in-memory table, about
/// 1 KiB each with the dialer's certificate); each connection is issued two.
pub const SERVER_SESSIONS: usize = 4096;

/// The server name a resumable dial to `id` sends: the session store files tickets under it,
/// so a ticket is offered only to the node it came from. Two DNS labels (a label holds 63
/// characters, the id is 64 hex digits) under `oap`.
pub(crate) fn server_name(id: &NodeId) -> String {
    let hex = id.to_string();
    let (a, b) = hex.split_at(hex.len() / 2);
    format!("{a}.{b}.oap")
}

/// Our certificate and the provider, built once per transport.
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    identity: Arc<Identity>,
    cert: CertificateDer<'static>,
    /// Resumption and 0-RTT on (`TransportConfig::zero_rtt`).
    zero_rtt: bool,
    /// With `zero_rtt`: the one dialer configuration of every dial by id. rustls resumes a
    /// session only under the configuration (verifier and client certificate, compared by
    /// pointer) it was made with, so this one is built once; its verifier takes the id to
    /// accept from the server name ([`server_name`]).
    resumable: Option<Arc<QuicClientConfig>>,
    /// Ids the shared verifier refused, by the id dialed: read once by the failed dial.
    refused: Refused,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("node_id", &self.identity.node_id())
            .field("zero_rtt", &self.zero_rtt)
            .finish_non_exhaustive()
    }
}

/// What a name-keyed verifier refused: dialed id → id presented.
type Refused = Arc<Mutex<BTreeMap<NodeId, NodeId>>>;

/// What the dialer's verifier saw, read after a failed handshake to tell a wrong peer from a
/// network failure.
pub(crate) type SeenId = Arc<OnceLock<NodeId>>;

impl TlsSetup {
    /// Makes our self-signed certificate.
    pub(crate) fn new(identity: Arc<Identity>, zero_rtt: bool) -> Result<TlsSetup, TransportError> {
        let tls = |e: &dyn std::fmt::Display| TransportError::Tls(e.to_string());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &identity.pkcs8_der(),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|e| tls(&e))?;
        let mut params =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(|e| tls(&e))?;
        // The id in the subject is for people reading certificates; verifiers use the key.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, identity.node_id().to_string());
        let cert = params.self_signed(&key).map_err(|e| tls(&e))?;
        let mut setup = TlsSetup {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            identity,
            cert: cert.der().clone(),
            zero_rtt,
            resumable: None,
            refused: Arc::default(),
        };
        if zero_rtt {
            let verifier = PeerVerifier {
                local: setup.identity.node_id(),
                expected: Expect::Named(setup.refused.clone()),
                seen: Arc::new(OnceLock::new()),
                algs: setup.provider.signature_verification_algorithms,
            };
            let mut cfg = setup.client_tls(verifier)?;
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE);
            cfg.enable_early_data = true;
            let quic = QuicClientConfig::try_from(cfg).map_err(|e| tls(&e))?;
            setup.resumable = Some(Arc::new(quic));
        }
        Ok(setup)
    }

    /// The id a resumable dial to `dialed` was refused for presenting, if it was.
    pub(crate) fn refused(&self, dialed: &NodeId) -> Option<NodeId> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(dialed)
    }

    /// rustls's dialer configuration with `verifier`, our certificate and ALPN.
    fn client_tls(&self, verifier: PeerVerifier) -> Result<rustls::ClientConfig, TransportError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(vec![self.cert.clone()], self.private_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        cfg.enable_early_data = false;
        Ok(cfg)
    }

    /// The listener's configuration: requires a client certificate, learns its id.
    pub(crate) fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
        max_incoming: usize,
    ) -> Result<quinn::ServerConfig, TransportError> {
        let verifier = Arc::new(PeerVerifier {
            local: self.identity.node_id(),
            expected: Expect::Any,
            seen: Arc::new(OnceLock::new()),
            algs: self.provider.signature_verification_algorithms,
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.private_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        if self.zero_rtt {
            // Stateful tickets, taken on use: rustls accepts 0-RTT only so (RFC 8446 §8.1).
            cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(SERVER_SESSIONS);
            cfg.send_tls13_tickets = 2;
            // quinn takes 0 or u32::MAX: QUIC flow control bounds early data, not TLS.
            cfg.max_early_data_size = u32::MAX;
            cfg.send_half_rtt_data = true;
        } else {
            cfg.send_tls13_tickets = 0;
        }
        let quic =
            QuicServerConfig::try_from(cfg).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport);
        server.max_incoming(max_incoming);
        Ok(server)
    }

    /// A dialer's configuration that accepts only `expected` (any valid key when `None`), and
    /// the slot where its verifier records the id the peer presented. With `zero_rtt` on and
    /// `expected` known it is the shared resumable configuration (the dial must then use
    /// [`server_name`]`(expected)`, and a refused id is found with [`refused`](Self::refused)):
    /// the ticket store is keyed by that name, and a dial by address alone has no id to key
    /// it by.
    pub(crate) fn client_config(
        &self,
        expected: Option<NodeId>,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<(quinn::ClientConfig, SeenId), TransportError> {
        let seen: SeenId = Arc::new(OnceLock::new());
        let quic = match (&self.resumable, expected) {
            (Some(resumable), Some(_)) => resumable.clone(),
            _ => {
                let verifier = PeerVerifier {
                    local: self.identity.node_id(),
                    expected: expected.map_or(Expect::Any, Expect::Id),
                    seen: seen.clone(),
                    algs: self.provider.signature_verification_algorithms,
                };
                let cfg = self.client_tls(verifier)?;
                Arc::new(
                    QuicClientConfig::try_from(cfg)
                        .map_err(|e| TransportError::Tls(e.to_string()))?,
                )
            }
        };
        let mut client = quinn::ClientConfig::new(quic);
        client.transport_config(transport);
        Ok((client, seen))
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.identity.pkcs8_der())
    }
}

fn tls_err(e: TlsError) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The node id a completed connection's peer proved in the handshake, after checking that
/// ALPN `oap/1` was agreed.
pub(crate) fn peer_id(conn: &quinn::Connection) -> Result<NodeId, TransportError> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        return Err(TransportError::Handshake("ALPN oap/1 not agreed".into()));
    }
    conn.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().and_then(|c| node_id_from_cert(c)))
        .ok_or_else(|| TransportError::Handshake("peer presented no Ed25519 certificate".into()))
}

/// Which peer a verifier accepts.
#[derive(Debug)]
enum Expect {
    /// Any key but ours (the listener; a dial by address).
    Any,
    /// This id only (a dial by id without resumption).
    Id(NodeId),
    /// The id in the server name (the shared resumable dialer); refusals are recorded.
    Named(Refused),
}

/// The node id a resumable dial's server name carries (see [`server_name`]).
fn id_from_server_name(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    let (a, rest) = dns.as_ref().split_once('.')?;
    let b = rest.strip_suffix(".oap")?;
    format!("{a}{b}").parse().ok()
}

/// The verifier both sides run. `expected` is set on a dialer only.
#[derive(Debug)]
struct PeerVerifier {
    local: NodeId,
    expected: Expect,
    seen: SeenId,
    algs: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
    ) -> Result<NodeId, TlsError> {
        let refuse =
            || TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        if !intermediates.is_empty() {
            return Err(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        let id = node_id_from_cert(end_entity)
            .ok_or(TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        let want = match &self.expected {
            Expect::Any => None,
            Expect::Id(want) => Some(*want),
            Expect::Named(_) => Some(
                server_name
                    .and_then(id_from_server_name)
                    .ok_or_else(refuse)?,
            ),
        };
        if let Expect::Named(refused) = &self.expected {
            if let Some(want) = want.filter(|want| id == self.local || *want != id) {
                let mut map = refused.lock().unwrap_or_else(PoisonError::into_inner);
                // Each entry is taken by its failed dial; a dial cut short leaves one behind.
                if map.len() >= SESSION_CACHE {
                    map.clear();
                }
                map.insert(want, id);
            }
        } else {
            let _ = self.seen.set(id);
        }
        if id == self.local || want.is_some_and(|want| want != id) {
            return Err(refuse());
        }
        Ok(id)
    }

    fn check_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check_cert(end_entity, intermediates, Some(server_name))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check_cert(end_entity, intermediates, None)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The DER of the Ed25519 `AlgorithmIdentifier` (OID 1.3.101.112, no parameters; RFC 8410).
const ED25519_ALG_ID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The node id carried by an X.509 certificate: its Ed25519 subject public key, or `None`
/// for anything else. A strict walk of the DER down to `subjectPublicKeyInfo`.
pub fn node_id_from_cert(der: &[u8]) -> Option<NodeId> {
    let (cert, rest) = der_expect(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (tbs, _) = der_expect(cert, 0x30)?;
    let mut fields = tbs;
    // version [0] EXPLICIT is optional.
    if let Some((0xa0, _, rest)) = der_next(fields) {
        fields = rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
        fields = der_expect(fields, tag)?.1;
    }
    let (spki, _) = der_expect(fields, 0x30)?;
    let (alg, rest) = der_expect(spki, 0x30)?;
    if alg != ED25519_ALG_ID {
        return None;
    }
    let (bits, rest) = der_expect(rest, 0x03)?;
    if !rest.is_empty() {
        return None;
    }
    match bits {
        [0, key @ ..] => Some(NodeId(key.try_into().ok()?)),
        _ => None,
    }
}

/// One TLV with the given tag, and what follows it.
fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match der_next(input)? {
        (t, content, rest) if t == tag => Some((content, rest)),
        _ => None,
    }
}

/// Splits one DER TLV (single-byte tag, definite length) off the front of `input`.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_certificate_carries_our_id_and_garbage_carries_none() {
        let Ok(identity) = Identity::from_seed([3; 32]) else {
            panic!("identity");
        };
        let want = identity.node_id();
        let Ok(setup) = TlsSetup::new(Arc::new(identity), false) else {
            panic!("tls setup");
        };
        assert_eq!(node_id_from_cert(&setup.cert), Some(want));
        assert_eq!(node_id_from_cert(&[]), None);
        assert_eq!(
            node_id_from_cert(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        let mut cut = setup.cert.to_vec();
        cut.truncate(cut.len() / 2);
        assert_eq!(node_id_from_cert(&cut), None);
    }

    #[test]
    fn every_node_id_makes_a_valid_server_name() {
        for id in [NodeId([0; 32]), NodeId([0xff; 32]), NodeId([0x5a; 32])] {
            let name = server_name(&id);
            let parsed = ServerName::try_from(name.clone());
            assert!(parsed.is_ok(), "{name}");
            assert_eq!(parsed.ok().as_ref().and_then(id_from_server_name), Some(id));
        }
    }
}

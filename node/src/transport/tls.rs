//! TLS 1.3 for OAP/1: a self-signed Ed25519 certificate carries the node key, and custom
//! verifiers turn "is this certificate trusted" into "is this the node we meant".
//!
//! Both sides present a certificate (mutual authentication). A verifier accepts exactly one
//! self-signed certificate whose key is Ed25519, checks the TLS 1.3 handshake signature with
//! that key (so the peer holds the private key, not just a copy of the certificate), and then:
//! the dialer compares the key with the node id it dialed and refuses any other; the listener
//! learns the peer's id from it. No CA, no names, no validity dates: identity is the key.
//! Session resumption and 0-RTT are off, so every connection proves its key afresh. The
//! crypto provider is `ring`, chosen explicitly, never a process-wide default.

use std::sync::{Arc, OnceLock};

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
/// The server name we send; verifiers ignore it (identity is the key, not a name).
pub(crate) const SERVER_NAME: &str = "macronode";

/// Our certificate and the provider, built once per transport.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    identity: Arc<Identity>,
    cert: CertificateDer<'static>,
}

/// What the dialer's verifier saw, read after a failed handshake to tell a wrong peer from a
/// network failure.
pub(crate) type SeenId = Arc<OnceLock<NodeId>>;

impl TlsSetup {
    /// Makes our self-signed certificate.
    pub(crate) fn new(identity: Arc<Identity>) -> Result<TlsSetup, TransportError> {
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
        Ok(TlsSetup {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            identity,
            cert: cert.der().clone(),
        })
    }

    /// The listener's configuration: requires a client certificate, learns its id.
    pub(crate) fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
        max_incoming: usize,
    ) -> Result<quinn::ServerConfig, TransportError> {
        let verifier = Arc::new(PeerVerifier {
            local: self.identity.node_id(),
            expected: None,
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
        cfg.send_tls13_tickets = 0;
        let quic =
            QuicServerConfig::try_from(cfg).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport);
        server.max_incoming(max_incoming);
        Ok(server)
    }

    /// A dialer's configuration that accepts only `expected` (any valid key when `None`), and
    /// the slot where its verifier records the id the peer presented.
    pub(crate) fn client_config(
        &self,
        expected: Option<NodeId>,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<(quinn::ClientConfig, SeenId), TransportError> {
        let seen: SeenId = Arc::new(OnceLock::new());
        let verifier = Arc::new(PeerVerifier {
            local: self.identity.node_id(),
            expected,
            seen: seen.clone(),
            algs: self.provider.signature_verification_algorithms,
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.private_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        cfg.enable_early_data = false;
        let quic =
            QuicClientConfig::try_from(cfg).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
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

/// The verifier both sides run. `expected` is set on a dialer only.
#[derive(Debug)]
struct PeerVerifier {
    local: NodeId,
    expected: Option<NodeId>,
    seen: SeenId,
    algs: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<NodeId, TlsError> {
        if !intermediates.is_empty() {
            return Err(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        let id = node_id_from_cert(end_entity)
            .ok_or(TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        let _ = self.seen.set(id);
        if id == self.local || self.expected.is_some_and(|want| want != id) {
            return Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
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
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check_cert(end_entity, intermediates)?;
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
        self.check_cert(end_entity, intermediates)?;
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
        let Ok(setup) = TlsSetup::new(Arc::new(identity)) else {
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
}

//! TLS on both listeners and mutual TLS on gRPC, with certificates made for the test: a CA, a
//! server certificate for localhost and 127.0.0.1, and a client certificate.

use crate::support::Server;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

/// Writes ca.pem, server.pem and server.key into `dir`; answers the CA and a client identity.
fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "kopek test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert =
            CertificateParams::new(names).expect("params").signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["client.kopek.test".into()]);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), &server_cert).expect("write");
    std::fs::write(dir.join("server.key"), &server_key).expect("write");
    Pki { ca: ca_cert.pem(), client_cert, client_key }
}

async fn https_get(address: &str, ca: &str, path: &str) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

async fn health(address: &str, tls: ClientTlsConfig) -> Result<(), String> {
    let channel = Channel::from_shared(format!("https://{address}"))
        .expect("uri")
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn both_listeners_speak_tls_and_grpc_requires_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = make_pki(dir.path());
    let data = dir.path().join("data");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let server = Server::start_with(
        &data,
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca],
    );

    let response = https_get(&server.http_address, &pki.ca, "/healthz").await.expect("https");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(&server.http_address).await.expect("connect");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");

    let trust = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost")
    };
    let refused = health(&server.grpc_address, trust()).await;
    assert!(refused.is_err(), "a client without a certificate got in");
    let admitted = health(
        &server.grpc_address,
        trust().identity(Identity::from_pem(&pki.client_cert, &pki.client_key)),
    )
    .await;
    assert_eq!(admitted, Ok(()));
    // A client that does not trust the server's CA stops at the handshake.
    let stranger = KeyPair::generate().expect("key");
    let stranger_ca = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&stranger)
        .expect("cert");
    let untrusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(stranger_ca.pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    assert!(health(&server.grpc_address, untrusting).await.is_err());
}

#[test]
fn bad_tls_files_fail_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").expect("write");
    let junk = dir.path().join("junk.pem");
    let junk = junk.to_str().expect("utf-8");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let (code, err) = crate::support::serve_refused(
        data,
        "127.0.0.1:0",
        &["--tls-cert", junk, "--tls-key", junk],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-cert/--tls-key"), "{err}");
    let (code, _, err) = crate::support::cli(&["serve", "--data-dir", data, "--tls-cert", junk]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "clap names the missing flag: {err}");
}

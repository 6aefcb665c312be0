#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
//! TLS: a control plane serving a certificate from a test CA; the data
//! plane and the CLI trust it with --tls-ca, and the CLI refuses it without.

use std::path::{Path, PathBuf};

use llmgw_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Writes ca.pem, cert.pem and key.pem (for localhost and 127.0.0.1).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "llmgw e2e test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn tls_control_plane() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let mut cp = ControlPlane::start_with(CpOptions {
        db: Db::Sqlite,
        env: Vec::new(),
        args: vec![
            "--tls-cert".to_string(),
            cert.to_str().unwrap().to_string(),
            "--tls-key".to_string(),
            key.to_str().unwrap().to_string(),
        ],
        zero_config: false,
    })
    .await;
    assert!(cp.tls, "the control plane logs tls=true");
    let url = cp.url();
    assert!(url.starts_with("https://localhost:"), "{url}");

    // The CLI without --tls-ca does not trust the test CA.
    let out = cli(&cp, &["provider", "list"]).await;
    println!("without --tls-ca: {}", out.stderr.trim());
    assert!(!out.ok(), "{}", out.stdout);
    assert!(
        out.stderr.contains("cannot reach control plane") && out.stderr.contains("certificate"),
        "{}",
        out.stderr
    );
    // Plain HTTP to the TLS port fails too.
    let mut cmd = cli_command(&format!("http://{}", cp.addr));
    cmd.env("LLMGW_ADMIN_TOKEN", &cp.admin_token)
        .args(["provider", "list"]);
    assert!(!run(cmd).await.ok());

    // With --tls-ca it works, by name and by IP address.
    cp.tls_ca = Some(ca.clone());
    cli_ok(
        &cp,
        &[
            "provider",
            "add",
            "p",
            "--protocol",
            "openai",
            "--base-url",
            "https://api.openai.com/v1",
        ],
    )
    .await;
    let list = cli_json(&cp, &["provider", "list"]).await;
    assert_eq!(list[0]["name"], "p", "{list}");
    let mut cmd = cli_command(&format!("https://127.0.0.1:{}", cp.addr.port()));
    cmd.env("LLMGW_ADMIN_TOKEN", &cp.admin_token)
        .arg("--tls-ca")
        .arg(&ca)
        .args(["-o", "json", "provider", "list"]);
    let out = run(cmd).await;
    assert!(out.ok(), "by IP address: {}", out.stderr);

    // A data plane trusting the CA connects and becomes ready.
    let dp = DataPlane::start_with(DpOptions {
        control_plane: url.clone(),
        node_id: "dp-tls".to_string(),
        token: Some(cp.dataplane_token.clone()),
        tls_ca: Some(ca.clone()),
        ..DpOptions::default()
    })
    .await;
    let v = wait_in_sync(&cp, "dp-tls").await;
    dp.wait_version(v, WAIT).await;
}

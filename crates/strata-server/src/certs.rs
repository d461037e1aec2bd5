//! `strata certs` and `strata token`: a private CA with node certificates,
//! and random tokens, for a test or small cluster. Production clusters
//! usually bring certificates from their own PKI; these are for getting
//! TLS on from the first day.
//!
//! `strata certs --revoke NAME` adds a certificate made here to the CA's
//! revocation list (`ca.crl`), for `[tls] client_crl`.
//!
//! Invariants: keys and tokens are written with mode 0600, and no existing
//! file is overwritten except the revocation list, which only grows (it
//! is replaced whole by rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// `strata certs` arguments.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CertsArgs {
    /// The directory to write into (created if missing): ca.pem, ca.key,
    /// and NAME.pem / NAME.key for every name.
    #[arg(long)]
    out: PathBuf,
    /// The nodes' identities (comma separated), e.g.
    /// primary,replica-1,replica-2; each certificate carries its name in
    /// its subject alternative names, which is what `[[auth.replicas]]`
    /// checks.
    #[arg(long, value_delimiter = ',', required_unless_present = "revoke")]
    names: Vec<String>,
    /// Revoke the certificates of these names (comma separated) made
    /// earlier into the same directory: adds them to DIR/ca.crl (created
    /// or extended, signed with DIR/ca.key). Point `[tls] client_crl` at it
    /// and send the nodes SIGHUP.
    #[arg(long, value_delimiter = ',', conflicts_with = "names")]
    revoke: Vec<String>,
    /// Host names and IP addresses every certificate also carries (so that
    /// clients can check the node they dial).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    hosts: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    days: u16,
}

/// `strata token` arguments.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct TokenArgs {
    /// The file to write the token into (mode 0600; must not exist; a
    /// missing directory is created mode 0700).
    #[arg(long)]
    out: PathBuf,
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn validity(params: &mut CertificateParams, days: u16) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// The CA's parameters (the same subject every time, so a CA rebuilt from
/// its key signs revocation lists the original certificate verifies).
fn ca_params(days: u16) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("generating certificates: {e}"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "strata cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    Ok(params)
}

/// The DER contents of every PEM block of `label` in `bytes`.
fn pem_blocks(bytes: &[u8], label: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(bytes)
        .filter_map(Result::ok)
        .filter(|pem| pem.label == label)
        .map(|pem| pem.contents)
        .collect()
}

/// Adds the certificates of `args.revoke` to DIR/ca.crl.
fn revoke(args: &CertsArgs) -> Result<(), String> {
    let read = |name: &str| {
        let path = args.out.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let key_pem =
        String::from_utf8(read("ca.key")?).map_err(|_| "ca.key is not PEM".to_string())?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| format!("ca.key: {e}"))?;
    let issuer = ca_params(args.days)?
        .self_signed(&ca_key)
        .map_err(|e| format!("ca.key: {e}"))?;
    // Serials already revoked stay revoked.
    let mut serials: Vec<Vec<u8>> = Vec::new();
    if args.out.join("ca.crl").exists() {
        for der in pem_blocks(&read("ca.crl")?, "X509 CRL") {
            let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| format!("ca.crl: {e}"))?;
            serials.extend(
                crl.iter_revoked_certificates()
                    .map(|r| r.raw_serial().to_vec()),
            );
        }
    }
    for name in &args.revoke {
        let file = format!("{name}.pem");
        let der = pem_blocks(&read(&file)?, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or_else(|| format!("{file} holds no certificate"))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{file}: {e}"))?;
        let serial = cert.raw_serial().to_vec();
        if !serials.contains(&serial) {
            serials.push(serial);
        }
        println!("revoked {name} (serial {})", cert.raw_serial_as_string());
    }
    let now = time::OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(i64::from(args.days)),
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp().unsigned_abs()),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(serial.clone()),
                revocation_time: now - time::Duration::minutes(1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer, &ca_key)
    .map_err(|e| format!("signing the revocation list: {e}"))?;
    let pem = crl
        .pem()
        .map_err(|e| format!("encoding the revocation list: {e}"))?;
    let path = args.out.join("ca.crl");
    let staged = args.out.join("ca.crl.tmp");
    let _ = std::fs::remove_file(&staged);
    write_new(&staged, pem.as_bytes(), false)?;
    std::fs::rename(&staged, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "{} lists {} revoked certificate(s): point [tls] client_crl at it and send the nodes SIGHUP",
        path.display(),
        serials.len()
    );
    Ok(())
}

/// Writes a CA and one certificate per name, or (`--revoke`) extends the
/// CA's revocation list.
pub(crate) fn certs(args: &CertsArgs) -> Result<(), String> {
    if !args.revoke.is_empty() {
        return revoke(args);
    }
    for name in &args.names {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            return Err(format!(
                "--names: {name:?} must be a DNS name ([A-Za-z0-9.-])"
            ));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let e = |e: rcgen::Error| format!("generating certificates: {e}");
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params(args.days)?.self_signed(&ca_key).map_err(e)?;
    write_new(&args.out.join("ca.pem"), ca.pem().as_bytes(), false)?;
    write_new(
        &args.out.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        true,
    )?;
    for name in &args.names {
        let mut sans = vec![name.clone()];
        sans.extend(args.hosts.iter().filter(|h| *h != name).cloned());
        let mut params = CertificateParams::new(sans).map_err(e)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, args.days);
        let key = KeyPair::generate().map_err(e)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        write_new(
            &args.out.join(format!("{name}.pem")),
            cert.pem().as_bytes(),
            false,
        )?;
        write_new(
            &args.out.join(format!("{name}.key")),
            key.serialize_pem().as_bytes(),
            true,
        )?;
    }
    println!(
        "wrote ca.pem, ca.key and {} certificate(s) valid {} days into {}",
        args.names.len(),
        args.days,
        args.out.display()
    );
    Ok(())
}

/// Writes a random token (32 bytes from the OS generator, hex).
pub(crate) fn token(args: &TokenArgs) -> Result<(), String> {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("the OS random generator: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    write_new(&args.out, format!("{hex}\n").as_bytes(), true)?;
    println!("wrote a token into {}", args.out.display());
    Ok(())
}

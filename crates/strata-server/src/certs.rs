//! `strata certs` and `strata token`: a private CA with node certificates,
//! and random tokens, for a test or small cluster. Production clusters
//! usually bring certificates from their own PKI; these are for getting
//! TLS on from the first day.
//!
//! Invariants: keys and tokens are written with mode 0600, and no existing
//! file is overwritten.

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
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
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

/// Writes a CA and one certificate per name.
pub(crate) fn certs(args: &CertsArgs) -> Result<(), String> {
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
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "strata cluster CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, args.days);
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
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

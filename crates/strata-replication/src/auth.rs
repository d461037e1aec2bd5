//! Who may call a node, and for what: the credentials a node accepts
//! (bearer tokens, client certificates under mutual TLS) and the scope
//! each one grants.
//!
//! A caller proves who it is in one of two ways:
//! - a bearer token in the `authorization` metadata (`Bearer <token>`),
//!   compared in constant time against every configured token (their
//!   SHA-256 digests, so neither content nor length leaks through timing);
//! - under mutual TLS, a client certificate the TLS layer has already
//!   checked against the CA, whose subject alternative names (DNS names)
//!   must include an identity this node allows. CA membership alone is not
//!   enough.
//!
//! Each credential carries a [`Role`] and optionally key ranges:
//! - `Client`: reads and writes through `Kv`, and `Admin` reads;
//! - `Admin`: everything a client may, plus `Admin` changes (split, merge,
//!   promote);
//! - `Replica`: only the `Replication` service (subscribe, snapshots), as
//!   the replica id the credential names, for the ranges it names.
//!
//! Invariants:
//! - With no credentials configured ([`Auth::open`]), every caller is
//!   allowed everything (a node on loopback, or behind another gate).
//! - With any credential configured, a call without a valid one is refused
//!   with `UNAUTHENTICATED`, and a valid one outside its scope with
//!   `PERMISSION_DENIED`; refusal messages name no path, version or
//!   configured secret, and a presented token is never logged.
//! - A token is matched byte for byte: nothing is trimmed (`"t "` is not
//!   `"t"`).

use std::sync::Arc;

use parking_lot::RwLock;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `Kv` reads and writes, `Admin` reads.
    Client,
    /// What a client may, plus `Admin` changes.
    Admin,
    /// The `Replication` service only.
    Replica,
}

impl Role {
    /// The role's name in configs and messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Replica => "replica",
        }
    }
}

/// Key ranges as `[start, end)` intervals (`None` end: unbounded); empty:
/// every key.
pub type Ranges = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A token a client presents; its `Debug` shows no content.
///
/// ```
/// use strata_replication::auth::Secret;
/// let token = Secret::new("s3cret-0123456789").unwrap();
/// assert!(!format!("{token:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Secret {
    /// The token as `authorization` metadata.
    ///
    /// # Errors
    /// A token that cannot travel in a header (empty, control characters,
    /// non-ASCII, or leading or trailing whitespace).
    pub fn new(token: &str) -> Result<Self, String> {
        check_token(token.as_bytes())?;
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(|_| "the token cannot travel in a header".to_string())
    }

    /// Puts the token on a request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Checks a token's bytes: 16 to 4096 printable ASCII characters, no
/// whitespace (a token read from a file loses one trailing newline first).
///
/// ```
/// use strata_replication::auth::check_token;
/// assert!(check_token(b"0123456789abcdef").is_ok());
/// assert!(check_token(b"0123456789abcdef ").is_err()); // a space
/// assert!(check_token(b"short").is_err());
/// ```
///
/// # Errors
/// What is wrong with it, never its content.
pub fn check_token(token: &[u8]) -> Result<(), String> {
    if token.len() < 16 || token.len() > 4096 {
        return Err(format!(
            "a token must be 16 to 4096 bytes (this one is {})",
            token.len()
        ));
    }
    if let Some(at) = token.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "a token must be printable ASCII without spaces (byte {at} is not)"
        ));
    }
    Ok(())
}

/// One accepted bearer token.
#[derive(Clone)]
pub struct TokenGrant {
    /// Who holds it: a replica's id for a replica token, a label for logs
    /// otherwise.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For a replica token: the key ranges it may ask for (empty: all).
    pub ranges: Ranges,
    digest: [u8; 32],
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("ranges", &self.ranges.len())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenGrant {
    /// A grant for `token` (kept only as its SHA-256 digest).
    ///
    /// ```
    /// use strata_replication::auth::{Role, TokenGrant};
    /// let grant = TokenGrant::new("app", Role::Client, b"s3cret-token", Vec::new());
    /// assert_eq!(format!("{grant:?}").contains("s3cret"), false);
    /// ```
    #[must_use]
    pub fn new(name: impl Into<String>, role: Role, token: &[u8], ranges: Ranges) -> Self {
        Self {
            name: name.into(),
            role,
            ranges,
            digest: token_digest(token),
        }
    }
}

/// One identity allowed to replicate under mutual TLS: a DNS name that must
/// appear in the client certificate's subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGrant {
    /// The identity (also the replica id it may subscribe as).
    pub identity: String,
    /// The key ranges it may ask for (empty: all).
    pub ranges: Ranges,
}

/// The caller of one request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The credential's name (token name or certificate identity);
    /// `"anonymous"` when the node requires no credentials.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Replica ids it may subscribe as; `None`: any.
    pub replica_ids: Option<Vec<String>>,
    /// The key ranges it may ask for (empty: all).
    pub ranges: Ranges,
    /// What proved it (to check it again after a reload).
    credential: Credential,
}

/// What a principal presented.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credential {
    None,
    Token([u8; 32]),
    Certificate(String),
}

impl Principal {
    /// Refuses the call unless this principal has one of `roles`
    /// (`PERMISSION_DENIED`).
    ///
    /// ```
    /// use strata_replication::auth::{Auth, Role, TokenGrant};
    /// let auth = Auth::new(
    ///     vec![TokenGrant::new("r1", Role::Replica, b"replica-token-0123", Vec::new())],
    ///     Vec::new(),
    /// );
    /// let mut request = tonic::Request::new(());
    /// request
    ///     .metadata_mut()
    ///     .insert("authorization", "Bearer replica-token-0123".parse().unwrap());
    /// let replica = auth.authenticate(&request).unwrap();
    /// assert!(replica.require(&[Role::Replica], "replicate").is_ok());
    /// let refused = replica.require(&[Role::Client], "write").unwrap_err();
    /// assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    /// ```
    ///
    /// # Errors
    /// `PERMISSION_DENIED` naming the role, never the credential.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), Status> {
        if self.credential == Credential::None || roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "a {} credential may not {what}",
                self.role.name()
            )))
        }
    }
}

/// The credentials a node accepts. Cheap to clone.
///
/// ```
/// use strata_replication::auth::{Auth, Role, TokenGrant};
/// let auth = Auth::new(
///     vec![TokenGrant::new("app", Role::Client, b"t0ken", Vec::new())],
///     Vec::new(),
/// );
/// let mut request = tonic::Request::new(());
/// request
///     .metadata_mut()
///     .insert("authorization", "Bearer t0ken".parse().unwrap());
/// assert_eq!(auth.authenticate(&request).unwrap().name, "app");
/// let stranger = tonic::Request::new(());
/// assert_eq!(
///     auth.authenticate(&stranger).unwrap_err().code(),
///     tonic::Code::Unauthenticated
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Swapped whole by [`Auth::replace`]; every clone sees the swap.
    inner: Arc<RwLock<Arc<Inner>>>,
    /// Bumped by every [`Auth::replace`].
    generation: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: Vec<TokenGrant>,
    peers: Vec<PeerGrant>,
}

impl Inner {
    fn required(&self) -> bool {
        !self.tokens.is_empty() || !self.peers.is_empty()
    }
}

impl Auth {
    /// No credentials required: every caller may do everything.
    #[must_use]
    pub fn open() -> Self {
        Self::default()
    }

    /// Accepts these tokens and these mutual-TLS identities (and nothing
    /// else, unless both lists are empty: then it is [`Auth::open`]).
    #[must_use]
    pub fn new(tokens: Vec<TokenGrant>, peers: Vec<PeerGrant>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(Inner { tokens, peers }))),
            generation: Arc::default(),
        }
    }

    /// Whether any credential is required.
    #[must_use]
    pub fn is_required(&self) -> bool {
        self.current().required()
    }

    fn current(&self) -> Arc<Inner> {
        Arc::clone(&self.inner.read())
    }

    /// Swaps in new credentials (a reload), for this value and every clone
    /// of it; calls already authenticated keep their principal. Turning
    /// credentials on or off takes a restart (a node started open may have
    /// been started without TLS client checks, and dropping every
    /// credential by a reload would open the node).
    ///
    /// ```
    /// use strata_replication::auth::{Auth, Role, TokenGrant};
    /// let auth = Auth::new(vec![TokenGrant::new("app", Role::Client, b"old-token-0123456789", Vec::new())], Vec::new());
    /// let seen_by_a_service = auth.clone();
    /// auth.replace(vec![TokenGrant::new("app", Role::Client, b"new-token-0123456789", Vec::new())], Vec::new()).unwrap();
    /// let mut request = tonic::Request::new(());
    /// request.metadata_mut().insert("authorization", "Bearer new-token-0123456789".parse().unwrap());
    /// assert!(seen_by_a_service.authenticate(&request).is_ok());
    /// assert!(auth.replace(Vec::new(), Vec::new()).is_err());
    /// ```
    ///
    /// # Errors
    /// The new credentials would turn requiring credentials on or off.
    pub fn replace(&self, tokens: Vec<TokenGrant>, peers: Vec<PeerGrant>) -> Result<(), String> {
        let next = Inner { tokens, peers };
        let mut current = self.inner.write();
        if next.required() != current.required() {
            return Err(if next.required() {
                "credentials cannot be turned on by a reload: restart the node".into()
            } else {
                "a reload cannot remove every credential (that would open the node): restart it to run without credentials".into()
            });
        }
        *current = Arc::new(next);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Changes with every [`Auth::replace`]: long-lived calls (a
    /// replication stream) compare it to notice a reload.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the credentials in force still grant what `principal` was
    /// granted (the same credential, role and ranges): false once its token
    /// or identity was removed or changed by a reload.
    ///
    /// ```
    /// use strata_replication::auth::{Auth, Role, TokenGrant};
    /// let grant = |t: &[u8]| TokenGrant::new("r1", Role::Replica, t, Vec::new());
    /// let auth = Auth::new(vec![grant(b"first-token-0123456789")], Vec::new());
    /// let mut request = tonic::Request::new(());
    /// request.metadata_mut().insert("authorization", "Bearer first-token-0123456789".parse().unwrap());
    /// let principal = auth.authenticate(&request).unwrap();
    /// assert!(auth.still_grants(&principal));
    /// auth.replace(vec![grant(b"other-token-0123456789")], Vec::new()).unwrap();
    /// assert!(!auth.still_grants(&principal));
    /// ```
    #[must_use]
    pub fn still_grants(&self, principal: &Principal) -> bool {
        let inner = self.current();
        match &principal.credential {
            Credential::None => !inner.required(),
            Credential::Token(digest) => inner.tokens.iter().any(|g| {
                bool::from(g.digest.ct_eq(digest))
                    && g.role == principal.role
                    && g.ranges == principal.ranges
                    && g.name == principal.name
            }),
            Credential::Certificate(identity) => inner
                .peers
                .iter()
                .any(|p| &p.identity == identity && p.ranges == principal.ranges),
        }
    }

    /// Who is calling: from a bearer token if one is presented (a wrong
    /// one is refused even if a certificate would do), else from the
    /// client certificate.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing, malformed or unknown token, or no
    /// allowed credential at all; `PERMISSION_DENIED` for a certificate
    /// that names no allowed identity.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let inner = self.current();
        if !inner.required() {
            return Ok(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
                replica_ids: None,
                ranges: Vec::new(),
                credential: Credential::None,
            });
        }
        if let Some(value) = request.metadata().get("authorization") {
            let token = value.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
                Status::unauthenticated("authorization must be \"Bearer <token>\"")
            })?;
            let presented = token_digest(token);
            // Compare against every grant, without stopping at a match.
            let mut found: Option<&TokenGrant> = None;
            for grant in &inner.tokens {
                if bool::from(grant.digest.ct_eq(&presented)) && found.is_none() {
                    found = Some(grant);
                }
            }
            let grant = found.ok_or_else(|| Status::unauthenticated("invalid token"))?;
            return Ok(Principal {
                name: grant.name.clone(),
                role: grant.role,
                replica_ids: (grant.role == Role::Replica).then(|| vec![grant.name.clone()]),
                ranges: grant.ranges.clone(),
                credential: Credential::Token(presented),
            });
        }
        let names = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|der| certificate_names(der.as_ref())));
        let Some(names) = names else {
            return Err(Status::unauthenticated(
                "a token or a client certificate is required",
            ));
        };
        let grant = inner
            .peers
            .iter()
            .find(|p| names.contains(&p.identity))
            .ok_or_else(|| {
                Status::permission_denied(
                    "the client certificate names no identity allowed to replicate",
                )
            })?;
        Ok(Principal {
            name: grant.identity.clone(),
            role: Role::Replica,
            replica_ids: Some(
                inner
                    .peers
                    .iter()
                    .filter(|p| names.contains(&p.identity))
                    .map(|p| p.identity.clone())
                    .collect(),
            ),
            ranges: grant.ranges.clone(),
            credential: Credential::Certificate(grant.identity.clone()),
        })
    }
}

fn token_digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

/// The DNS names in a DER certificate's subject alternative names (none if
/// it does not parse).
fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_token(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn tokens_match_exactly_and_carry_their_scope() {
        let auth = Auth::new(
            vec![
                TokenGrant::new("app", Role::Client, b"old", Vec::new()),
                TokenGrant::new("app", Role::Client, b"new", Vec::new()),
                TokenGrant::new("r1", Role::Replica, b"rep", vec![(b"a".to_vec(), None)]),
            ],
            Vec::new(),
        );
        // Two tokens at once (rotation).
        assert_eq!(
            auth.authenticate(&with_token("Bearer old")).unwrap().role,
            Role::Client
        );
        assert_eq!(
            auth.authenticate(&with_token("Bearer new")).unwrap().role,
            Role::Client
        );
        let replica = auth.authenticate(&with_token("Bearer rep")).unwrap();
        assert_eq!(replica.replica_ids, Some(vec!["r1".to_string()]));
        assert_eq!(replica.ranges.len(), 1);
        assert!(replica.require(&[Role::Client], "write").is_err());
        for bad in [
            "Bearer ol",
            "Bearer old ",
            "Bearer  old",
            "bearer old",
            "old",
            "Bearer ",
        ] {
            let err = auth.authenticate(&with_token(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!err.message().contains("old"), "{bad:?}: {}", err.message());
        }
        assert_eq!(
            auth.authenticate(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn open_auth_allows_everything() {
        let p = Auth::open().authenticate(&Request::new(())).unwrap();
        assert!(p.require(&[Role::Replica], "x").is_ok());
        assert!(p.require(&[Role::Admin], "x").is_ok());
    }
}

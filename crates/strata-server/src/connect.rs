//! How the client subcommands reach a node: its address, TLS (the CA that
//! signs the node's certificate, optionally a client certificate), and a
//! token read from a file or the `STRATA_TOKEN` environment variable
//! (never from the command line, where other users could read it).

use std::path::PathBuf;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_replication::auth::Secret;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::ClientTlsSection;

/// TLS and token settings of a client subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Security {
    /// TLS: the CA certificate (PEM) that signs the node's certificate
    /// (the address becomes https://).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Mutual TLS: this client's certificate (PEM).
    #[arg(long, requires = "client_key", requires = "ca")]
    client_cert: Option<PathBuf>,
    /// Mutual TLS: this client's private key (PEM, mode 0600).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// The name the node's certificate must carry (default: the host of
    /// the address).
    #[arg(long, requires = "ca")]
    server_name: Option<String>,
    /// A file holding the token to present (mode 0600); without it, the
    /// STRATA_TOKEN environment variable if set.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// A node to talk to.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// The node's address (host:port, or an http:// or https:// URL).
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub(crate) node: String,
    #[command(flatten)]
    pub(crate) security: Security,
}

/// Puts the token on every request.
#[derive(Clone, Debug)]
pub(crate) struct WithToken(Option<Secret>);

impl WithToken {
    /// Puts `token` (if any) on every request.
    pub(crate) fn new(token: Option<Secret>) -> Self {
        Self(token)
    }
}

impl Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            token.attach(&mut request);
        }
        Ok(request)
    }
}

/// A connected client with the token attached.
pub(crate) type Connected = InterceptedService<Channel, WithToken>;

impl Security {
    fn token(&self) -> Result<Option<Secret>, String> {
        let env = std::env::var_os("STRATA_TOKEN").map(|_| "STRATA_TOKEN");
        crate::secrets::presented_token(self.token_file.as_deref(), env)
    }

    /// The TLS settings, if `--ca` is given.
    fn tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        self.ca
            .as_ref()
            .map(|ca| {
                crate::secrets::client_tls(&ClientTlsSection {
                    ca: ca.clone(),
                    cert: self.client_cert.clone(),
                    key: self.client_key.clone(),
                    server_name: self.server_name.clone(),
                })
            })
            .transpose()
    }

    /// These settings for `strata-client`: TLS, and the token (read and
    /// checked as for a single node).
    pub(crate) fn client_settings(
        &self,
    ) -> Result<
        (
            Option<tonic::transport::ClientTlsConfig>,
            Option<strata_client::Bearer>,
        ),
        String,
    > {
        let bytes = match (&self.token_file, std::env::var_os("STRATA_TOKEN")) {
            (Some(file), _) => Some(crate::secrets::token_from_file(file)?),
            (None, Some(_)) => Some(crate::secrets::token_from_env("STRATA_TOKEN")?),
            (None, None) => None,
        };
        let bearer = bytes
            .map(|bytes| {
                let text =
                    String::from_utf8(bytes).map_err(|_| "a token must be ASCII".to_string())?;
                strata_client::Bearer::new(&text).map_err(|e| e.to_string())
            })
            .transpose()?;
        Ok((self.tls()?, bearer))
    }

    /// A channel to `node` with these settings.
    pub(crate) async fn channel(&self, node: &str) -> Result<(Channel, WithToken), String> {
        let tls = self.tls()?;
        let address = if node.starts_with("http://") || node.starts_with("https://") {
            node.to_string()
        } else if tls.is_some() {
            format!("https://{node}")
        } else {
            format!("http://{node}")
        };
        let channel = dial(&address, tls).await?;
        Ok((channel, WithToken(self.token()?)))
    }
}

/// A channel to `address` (an `http://` or `https://` URL), with `tls`
/// for `https://`, within a 5 s connect timeout.
pub(crate) async fn dial(
    address: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| format!("bad node address {address:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings for {address}: {e}"))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))
}

impl NodeArgs {
    /// A `Kv` client.
    pub(crate) async fn kv(&self) -> Result<KvClient<Connected>, String> {
        let (channel, token) = self.security.channel(&self.node).await?;
        Ok(KvClient::with_interceptor(channel, token)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(32 << 20))
    }

    /// An `Admin` client.
    pub(crate) async fn admin(&self) -> Result<AdminClient<Connected>, String> {
        let (channel, token) = self.security.channel(&self.node).await?;
        Ok(AdminClient::with_interceptor(channel, token))
    }
}

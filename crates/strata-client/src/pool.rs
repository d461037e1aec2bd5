//! Connections to the group's nodes, one lazily opened channel per address.
//!
//! Role: turns an address as published (`host:port` or a URL) into a
//! `Kv` or `Admin` client with the configured TLS and token. Channels are
//! lazy: the first call opens the connection, so a node that cannot be
//! reached fails that call with a [`tonic::ConnectError`] in its status's
//! chain (see `wire`), and a channel whose node restarts reconnects by
//! itself.
//!
//! Thread-safety: the map of channels sits behind a mutex held only to
//! look up or insert, never across I/O.
//!
//! Invariants: the connect timeout is half the request timeout, so a node
//! that cannot be reached fails as "never sent" before the call's own
//! deadline could make a write's outcome unknown.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::{Bearer, ClientConfig};

/// Puts the token, if any, on every request.
#[derive(Debug, Clone)]
pub(crate) struct WithBearer(Option<Bearer>);

impl Interceptor for WithBearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.header().clone());
        }
        Ok(request)
    }
}

/// A channel with the token attached.
pub(crate) type Connected = InterceptedService<Channel, WithBearer>;

/// The channels, by address.
pub(crate) struct Pool {
    tls: Option<ClientTlsConfig>,
    bearer: WithBearer,
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("tls", &self.tls.as_ref().map(|_| "<configured>"))
            .field("bearer", &self.bearer)
            .field("channels", &self.channels.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(config: &ClientConfig) -> Pool {
        Pool {
            tls: config.tls.clone(),
            bearer: WithBearer(config.bearer.clone()),
            connect_timeout: config.request_timeout / 2,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The URL of `address`: as given when it has a scheme, else
    /// `https://` with TLS configured and `http://` without.
    pub(crate) fn url(&self, address: &str) -> String {
        if address.starts_with("http://") || address.starts_with("https://") {
            address.to_string()
        } else if self.tls.is_some() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let url = self.url(address);
        if let Some(channel) = self.channels.lock().get(&url) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("not a valid node address: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS settings: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        self.channels.lock().insert(url, channel.clone());
        Ok(channel)
    }

    /// A `Kv` client for `address`.
    ///
    /// # Errors
    /// An address that is not a URL, or TLS settings tonic refuses.
    pub(crate) fn kv(&self, address: &str) -> Result<KvClient<Connected>, String> {
        let channel = self.channel(address)?;
        Ok(KvClient::with_interceptor(channel, self.bearer.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(32 << 20))
    }

    /// An `Admin` client for `address`.
    ///
    /// # Errors
    /// As [`Pool::kv`].
    pub(crate) fn admin(&self, address: &str) -> Result<AdminClient<Connected>, String> {
        let channel = self.channel(address)?;
        Ok(AdminClient::with_interceptor(channel, self.bearer.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_get_one() {
        let pool = Pool::new(&ClientConfig::seeds(["x"]));
        assert_eq!(pool.url("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(pool.url("https://n1:7001"), "https://n1:7001");
        assert!(pool.kv("http://bad address").is_err());
    }
}

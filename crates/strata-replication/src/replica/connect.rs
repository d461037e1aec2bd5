//! The channel to the upstream: by address (with TLS and a connect
//! timeout) or a ready channel from the configuration.

use super::*;

pub(super) async fn connect(config: &ReplicaConfig) -> Result<ReplicationClient<Channel>, String> {
    if let Some(channel) = &config.channel {
        return Ok(ReplicationClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(1 << 20));
    }
    let mut endpoint = Endpoint::from_shared(config.upstream.clone())
        .map_err(|e| format!("bad upstream address {:?}: {e}", config.upstream))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS settings for {}: {e}", config.upstream))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.upstream))?;
    Ok(ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(1 << 20))
}

//! The webhook sender's resolver: the system's answer without internal addresses, so a name
//! that resolves inward at delivery time (DNS rebinding) reaches nothing. The rule itself is
//! `kopek_events::targets`.

use kopek_events::targets::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

/// The sender's resolver under [`kopek_events::targets::Targets::PublicOnly`]: the system's answer without internal
/// addresses; a name with only internal addresses fails to resolve.
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> =
                resolved.filter(|address| is_public(address.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addresses: Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

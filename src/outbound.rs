//! Requests the gateway makes to partners: one HTTP client with a policy. Partner URLs come
//! from config or from documents partners serve (discovery, JWKS), so every request is
//! checked: `https` only (unless `outbound.allow_http`), and no loopback, private or other
//! non-public addresses (unless `outbound.allow_private_networks`), both for IP literals and
//! for what a host name resolves to, and again on every redirect hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::OutboundConfig;

/// Why an outbound URL was refused before any byte was sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{0}: only https URLs are allowed (outbound.allow_http is off)")]
    Scheme(String),
    #[error("{0}: the host is a non-public address (outbound.allow_private_networks is off)")]
    PrivateAddress(String),
    #[error("{0}: not an absolute http(s) URL with a host")]
    Malformed(String),
    #[error(
        "{0}: the host name resolves to {1}, a non-public address (outbound.allow_private_networks is off)"
    )]
    ResolvesPrivate(String, IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    allow_http: bool,
    allow_private: bool,
}

impl Policy {
    fn check(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refused::Scheme(redact(url))),
            _ => return Err(Refused::Malformed(redact(url))),
        }
        match url.host() {
            None => Err(Refused::Malformed(redact(url))),
            Some(url::Host::Ipv4(ip)) if !self.allow_private && !is_public(IpAddr::V4(ip)) => {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(url::Host::Ipv6(ip)) if !self.allow_private && !is_public(IpAddr::V6(ip)) => {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(url::Host::Domain(d))
                if !self.allow_private && (d == "localhost" || d.ends_with(".localhost")) =>
            {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(_) => Ok(()),
        }
    }
}

/// The URL without its query: queries may carry codes or tokens and must not reach logs.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    u.to_string()
}

/// The outbound client (cheap to clone).
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    /// For webhook deliveries: the same address policy, no redirects followed (a 3xx is a
    /// failed attempt, per Standard Webhooks), and the timeout set per request.
    webhooks: reqwest::Client,
    policy: Policy,
}

impl Outbound {
    pub fn new(cfg: &OutboundConfig) -> anyhow::Result<Outbound> {
        let policy = Policy {
            allow_http: cfg.allow_http,
            allow_private: cfg.allow_private_networks,
        };
        let redirect_policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if let Err(e) = policy.check(attempt.url()) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("partner-gateway/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .redirect(redirect_policy)
            .dns_resolver(Arc::new(PublicResolver {
                allow_private: cfg.allow_private_networks,
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let webhooks = reqwest::Client::builder()
            .user_agent(concat!(
                "partner-gateway-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicResolver {
                allow_private: cfg.allow_private_networks,
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Outbound {
            client,
            webhooks,
            policy,
        })
    }

    /// Refuse `url` unless the policy allows it.
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        self.policy.check(url)
    }

    /// Parse and check `url`.
    pub fn url(&self, url: &str) -> Result<Url, Refused> {
        let parsed =
            Url::parse(url).map_err(|_| Refused::Malformed(url.chars().take(200).collect()))?;
        self.check(&parsed)?;
        Ok(parsed)
    }

    /// The underlying client, for a URL that has passed [`Outbound::check`].
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The webhook delivery client (no redirects), for a URL that has passed the checks.
    pub fn webhooks(&self) -> &reqwest::Client {
        &self.webhooks
    }

    /// [`Outbound::url`], and a host name must not resolve to a non-public address now
    /// (checked again at every connection by the resolver). A name that does not resolve
    /// at all is let through: the delivery will fail and say so.
    pub async fn url_resolved(&self, url: &str) -> Result<Url, Refused> {
        let parsed = self.url(url)?;
        if self.policy.allow_private {
            return Ok(parsed);
        }
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
                for a in addrs {
                    if !is_public(a.ip()) {
                        return Err(Refused::ResolvesPrivate(redact(&parsed), a.ip()));
                    }
                }
            }
        }
        Ok(parsed)
    }
}

/// Resolves names with the system resolver and drops non-public addresses, so a partner
/// host name that points at the gateway's own network is refused at connect time.
struct PublicResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (outbound.allow_private_networks is off)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0, 0]))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240)
}

/// An absolute `http(s)` URL with a host and no user info, query or fragment: a base that
/// paths are appended to (FHIR issuers, the public URL).
pub fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = parse_http_url(s)?;
    if url.query().is_some() {
        return Err(format!("{s:?} must not have a query string"));
    }
    Ok(url)
}

/// An absolute `http(s)` URL with a host and no user info or fragment.
pub fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{s:?} must be an absolute http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{s:?} must not carry user info"));
    }
    if url.fragment().is_some() {
        return Err(format!("{s:?} must not have a fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_http: bool, allow_private: bool) -> Policy {
        Policy {
            allow_http,
            allow_private,
        }
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let u = Url::parse("http://ehr.example.com/fhir").unwrap();
        assert!(matches!(
            policy(false, false).check(&u),
            Err(Refused::Scheme(_))
        ));
        assert!(policy(true, false).check(&u).is_ok());
    }

    #[test]
    fn private_and_loopback_addresses_are_refused_unless_allowed() {
        for u in [
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://192.168.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://localhost:8080/",
            "https://100.64.0.1/",
        ] {
            let url = Url::parse(u).unwrap();
            assert!(
                matches!(
                    policy(true, false).check(&url),
                    Err(Refused::PrivateAddress(_))
                ),
                "{u}"
            );
            assert!(policy(true, true).check(&url).is_ok(), "{u}");
        }
        let public = Url::parse("https://93.184.216.34/").unwrap();
        assert!(policy(false, false).check(&public).is_ok());
    }

    #[test]
    fn other_schemes_are_refused() {
        let u = Url::parse("file:///etc/passwd").unwrap();
        assert!(matches!(
            policy(true, true).check(&u),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn redaction_drops_the_query() {
        let u = Url::parse("https://ehr.example.com/cb?code=secret&state=s").unwrap();
        assert_eq!(redact(&u), "https://ehr.example.com/cb");
    }

    #[test]
    fn base_urls_have_no_query_or_user_info() {
        assert!(parse_base_url("https://ehr.example.com/fhir/r4").is_ok());
        assert!(parse_base_url("https://ehr.example.com/fhir?x=1").is_err());
        assert!(parse_base_url("https://u:p@ehr.example.com/").is_err());
        assert!(parse_base_url("ehr.example.com/fhir").is_err());
        assert!(parse_http_url("https://app.example.com/launch?tenant=a").is_ok());
    }
}

//! Requests the gateway makes to partners: one HTTP client with a policy. Partner URLs come
//! from config or from documents partners serve (discovery, JWKS), so every request is
//! checked: `https` only (unless `outbound.allow_http`), and no loopback, private or other
//! non-public addresses, both for IP literals and for what a host name resolves to, and
//! again on every redirect hop. IPv6 forms that carry an IPv4 address (mapped, compatible,
//! NAT64, 6to4, Teredo, ISATAP) are judged by that address.
//!
//! A non-public address is reached only inside a network that config names: a partner's
//! `private_networks` (an on-premises EHR, a campus LMS) or `outbound.private_networks`
//! (the company's own services). The shared client admits all of them; a flow whose URLs
//! come from someone the gateway does not know yet (LTI Dynamic Registration) uses
//! [`Outbound::for_partner`], which admits only that partner's networks.

pub mod refusal;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::{Config, OutboundConfig, PartnerConfig};

/// Why an outbound URL was refused before any byte was sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{0}: only https URLs are allowed (outbound.allow_http is off)")]
    Scheme(String),
    #[error(
        "{0}: the host is a non-public address outside the private networks allowed here (private_networks)"
    )]
    PrivateAddress(String),
    #[error("{0}: not an absolute http(s) URL with a host")]
    Malformed(String),
    #[error(
        "{0}: the host name resolves to {1}, a non-public address outside the private networks allowed here (private_networks)"
    )]
    ResolvesPrivate(String, IpAddr),
}

/// A network (`10.20.0.0/16`, `fd00:1::/48`) or one address (`127.0.0.1`) in which
/// non-public addresses may be reached. Config spells it as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// The widest network config may allow: a whole `/8` (`10.0.0.0/8`), no wider, so no
/// entry can quietly stand for "everything".
const MIN_PREFIX: u8 = 8;

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an IP address or network (e.g. \"10.20.0.0/16\", \"127.0.0.1\", \"fd00::/8\")")
        })?;
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(format!("{s:?}: write IPv4 networks in IPv4 form"));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        if prefix < MIN_PREFIX {
            return Err(format!(
                "{s:?}: a network wider than /{MIN_PREFIX} is refused; list the networks the partner's systems are on"
            ));
        }
        let net = Network { addr, prefix };
        if net.network_addr() != addr {
            return Err(format!(
                "{s:?} has host bits set; the network is {}",
                Network {
                    addr: net.network_addr(),
                    prefix
                }
            ));
        }
        Ok(net)
    }

    fn bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }

    fn mask(&self, width: u8) -> u128 {
        let ones = u32::from(self.prefix);
        let width = u32::from(width);
        // The top `prefix` bits of a `width`-bit number.
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all & !all.checked_shr(ones).unwrap_or(0)
    }

    fn network_addr(&self) -> IpAddr {
        let (bits, width) = Self::bits(self.addr);
        let masked = bits & self.mask(width);
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(masked).unwrap_or(0))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
        }
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, width) = Self::bits(ip);
        let (b, _) = Self::bits(self.addr);
        let m = self.mask(width);
        a & m == b & m
    }
}

/// `private_networks` in config: a list, or (as an environment variable sets it) one
/// string with the networks separated by commas.
pub fn deserialize_networks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Network>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Spelled {
        List(Vec<String>),
        Joined(String),
    }
    let items = match <Spelled as serde::Deserialize>::deserialize(d)? {
        Spelled::List(v) => v,
        Spelled::Joined(s) => s
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
    };
    items
        .iter()
        .map(|s| Network::parse(s).map_err(serde::de::Error::custom))
        .collect()
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The networks the shared client may reach: `outbound.private_networks` and every
/// partner's `private_networks`.
pub fn configured_networks(config: &Config) -> Vec<Network> {
    let mut out = config.outbound.private_networks.clone();
    for p in &config.partners {
        out.extend(p.private_networks.iter().copied());
    }
    out.sort_by_key(|n| (Network::bits(n.addr), n.prefix));
    out.dedup();
    out
}

/// Clients for URLs that a key holder chose (webhook endpoints), scoped to the owner: a
/// partner's endpoints reach non-public addresses only in that partner's own
/// `private_networks` and the gateway-wide `outbound.private_networks`; the app's endpoints
/// only in the gateway-wide list. So one partner cannot point deliveries at another
/// partner's on-premises network. Built once at start.
#[derive(Clone)]
pub struct Scoped {
    gateway: Outbound,
    partners: Arc<std::collections::HashMap<String, Outbound>>,
}

impl Scoped {
    pub fn from_config(config: &Config) -> anyhow::Result<Scoped> {
        let shared = config.outbound.private_networks.clone();
        let gateway = Outbound::new(&config.outbound, shared.clone())?;
        let mut partners = std::collections::HashMap::new();
        for p in config
            .partners
            .iter()
            .filter(|p| !p.private_networks.is_empty())
        {
            let mut nets = shared.clone();
            nets.extend(p.private_networks.iter().copied());
            partners.insert(p.id.clone(), Outbound::new(&config.outbound, nets)?);
        }
        Ok(Scoped {
            gateway,
            partners: Arc::new(partners),
        })
    }

    /// The client for an endpoint of `partner` (`None`: the app's).
    pub fn for_owner(&self, partner: Option<&str>) -> &Outbound {
        partner
            .and_then(|p| self.partners.get(p))
            .unwrap_or(&self.gateway)
    }
}

#[derive(Debug, Clone)]
struct Policy {
    allow_http: bool,
    /// Where non-public addresses may be reached.
    networks: Arc<[Network]>,
}

impl Policy {
    /// Whether a connection to `ip` is allowed.
    fn admits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.networks.iter().any(|n| n.contains(ip))
    }

    fn check(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refused::Scheme(redact(url))),
            _ => return Err(Refused::Malformed(redact(url))),
        }
        // `url` has already turned every IPv4 spelling a browser accepts (`2130706433`,
        // `0x7f.1`, `127.1`, `017700000001`) into an IPv4 host, so none reaches DNS.
        match url.host() {
            None => Err(Refused::Malformed(redact(url))),
            Some(url::Host::Ipv4(ip)) if !self.admits(IpAddr::V4(ip)) => {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(url::Host::Ipv6(ip)) if !self.admits(IpAddr::V6(ip)) => {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(url::Host::Domain(d))
                if is_localhost(d) && !self.admits(IpAddr::V4(Ipv4Addr::LOCALHOST)) =>
            {
                Err(Refused::PrivateAddress(redact(url)))
            }
            Some(_) => Ok(()),
        }
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761 §6.3).
fn is_localhost(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
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
    timeouts: (u64, u64),
}

impl Outbound {
    /// The shared client: non-public addresses only in the networks config names
    /// ([`configured_networks`]).
    pub fn from_config(config: &Config) -> anyhow::Result<Outbound> {
        if config.outbound.allow_private_networks == Some(false) {
            tracing::warn!(
                "outbound.allow_private_networks is deprecated and has no effect; remove it (private addresses are reached through private_networks)"
            );
        }
        Outbound::new(&config.outbound, configured_networks(config))
    }

    pub fn new(cfg: &OutboundConfig, networks: Vec<Network>) -> anyhow::Result<Outbound> {
        Outbound::build(
            cfg.allow_http,
            networks,
            (cfg.timeout_secs, cfg.connect_timeout_secs),
        )
    }

    fn build(
        allow_http: bool,
        networks: Vec<Network>,
        timeouts: (u64, u64),
    ) -> anyhow::Result<Outbound> {
        let policy = Policy {
            allow_http,
            networks: networks.into(),
        };
        let (timeout_secs, connect_timeout_secs) = timeouts;
        let redirects = policy.clone();
        let redirect_policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if let Err(e) = redirects.check(attempt.url()) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("partner-gateway/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(timeout_secs))
            .connect_timeout(Duration::from_secs(connect_timeout_secs))
            .redirect(redirect_policy)
            .dns_resolver(Arc::new(PublicResolver {
                policy: policy.clone(),
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            // reqwest's default, stated: a request body sent in pieces must not wait on
            // the EHR's delayed ACK.
            .tcp_nodelay(true)
            .build()?;
        let webhooks = reqwest::Client::builder()
            .user_agent(concat!(
                "partner-gateway-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(Duration::from_secs(connect_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicResolver {
                policy: policy.clone(),
            }))
            .pool_idle_timeout(Duration::from_secs(60))
            // reqwest's default, stated: a request body sent in pieces must not wait on
            // the EHR's delayed ACK.
            .tcp_nodelay(true)
            .build()?;
        Ok(Outbound {
            client,
            webhooks,
            policy,
            timeouts,
        })
    }

    /// A client with the same settings that reaches non-public addresses only in
    /// `partner`'s own `private_networks`: for requests to URLs that someone outside the
    /// gateway chose on that partner's behalf (LTI Dynamic Registration). Builds a client,
    /// so keep it to rare flows.
    pub fn for_partner(&self, partner: &PartnerConfig) -> anyhow::Result<Outbound> {
        Outbound::build(
            self.policy.allow_http,
            partner.private_networks.clone(),
            self.timeouts,
        )
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
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
                for a in addrs {
                    if !self.policy.admits(a.ip()) {
                        return Err(Refused::ResolvesPrivate(redact(&parsed), a.ip()));
                    }
                }
            }
        }
        Ok(parsed)
    }
}

/// Resolves names with the system resolver and drops the addresses the policy does not
/// admit, so a partner host name that points at the gateway's own network is refused at
/// connect time (and a DNS answer cannot differ from what was checked before).
struct PublicResolver {
    policy: Policy,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.admits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (nor one in the private networks allowed here)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address. An IPv6 address that carries an
/// IPv4 address the network routes to (mapped, compatible, SIIT, NAT64, 6to4, Teredo,
/// ISATAP) is judged by that IPv4 address as well.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
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
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast (deprecated)
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
        || o[0] >= 240)
}

/// The IANA special-purpose registry (RFC 6890 and successors), read as: global unicast
/// is `2000::/3` minus the blocks below; everything outside it is refused, except the
/// forms that embed an IPv4 address, which are judged by it.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let [.., a, b, c, d] = ip.octets();
    let low32 = Ipv4Addr::new(a, b, c, d);
    let v4_at = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped).
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) {
        return !(ip.is_unspecified() || ip.is_loopback()) && is_public_v4(low32);
    }
    // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765).
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return is_public_v4(low32);
    }
    // 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052): a gateway on the path turns
    // it into the IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(low32);
    }
    // 2002::/16, 6to4 (RFC 3056): the IPv4 address follows the prefix.
    if s[0] == 0x2002 {
        return is_public_v4(v4_at(s[1], s[2]));
    }
    // 2001::/32, Teredo (RFC 4380): the server's IPv4 address, then the client's XOR-ed.
    if s[0] == 0x2001 && s[1] == 0 {
        return is_public_v4(v4_at(s[2], s[3])) && is_public_v4(!low32);
    }
    // ISATAP interface identifiers (RFC 5214): ::0:5efe:a.b.c.d or ::200:5efe:a.b.c.d
    // under any /64; the IPv4 address is the tunnel's end.
    if (s[4] & 0xfcff) == 0 && s[5] == 0x5efe && !is_public_v4(low32) {
        return false;
    }
    (s[0] & 0xe000) == 0x2000 // global unicast, 2000::/3
        && !(s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23, IETF protocol assignments
        && !(s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32, documentation
        && !(s[0] == 0x3fff && s[1] < 0x1000) // 3fff::/20, documentation (RFC 9637)
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

    fn policy(allow_http: bool, networks: &[&str]) -> Policy {
        Policy {
            allow_http,
            networks: networks
                .iter()
                .map(|n| Network::parse(n).unwrap())
                .collect::<Vec<_>>()
                .into(),
        }
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let u = Url::parse("http://ehr.example.com/fhir").unwrap();
        assert!(matches!(
            policy(false, &[]).check(&u),
            Err(Refused::Scheme(_))
        ));
        assert!(policy(true, &[]).check(&u).is_ok());
    }

    /// Every spelling of an address a URL can carry, allowed or refused with no private
    /// network configured. IPv6 forms that embed an IPv4 address are judged by it.
    #[test]
    fn address_forms_are_allowed_or_refused_by_the_address_they_reach() {
        let table: &[(&str, bool)] = &[
            // IPv4, and the spellings of 127.0.0.1 a URL parser turns into it.
            ("http://93.184.216.34/", true),
            ("http://127.0.0.1/", false),
            ("http://2130706433/", false),
            ("http://0x7f.1/", false),
            ("http://0x7f000001/", false),
            ("http://127.1/", false),
            ("http://017700000001/", false),
            ("http://0177.0.0.1/", false),
            ("http://127.0.0.1./", false),
            ("http://0/", false),
            ("http://0.0.0.0/", false),
            ("http://10.1.2.3/", false),
            ("http://172.16.0.1/", false),
            ("http://172.31.255.255/", false),
            ("http://172.32.0.1/", true),
            ("http://192.168.0.1/", false),
            ("http://169.254.169.254/latest/meta-data", false),
            ("http://100.64.0.1/", false),
            ("http://100.127.255.255/", false),
            ("http://100.128.0.1/", true),
            ("http://192.0.0.8/", false),
            ("http://192.0.2.1/", false),
            ("http://192.88.99.1/", false),
            ("http://198.18.0.1/", false),
            ("http://198.19.255.255/", false),
            ("http://198.51.100.7/", false),
            ("http://203.0.113.9/", false),
            ("http://224.0.0.1/", false),
            ("http://239.255.255.250/", false),
            ("http://240.0.0.1/", false),
            ("http://255.255.255.255/", false),
            // IPv6 proper.
            ("http://[2606:2800:220:1:248:1893:25c8:1946]/", true),
            ("http://[::]/", false),
            ("http://[::1]/", false),
            ("http://[fe80::1]/", false),
            ("http://[febf::1]/", false),
            ("http://[fec0::1]/", false),
            ("http://[fc00::1]/", false),
            ("http://[fd12:3456::1]/", false),
            ("http://[ff02::1]/", false),
            ("http://[ff0e::1]/", false),
            ("http://[100::1]/", false),
            ("http://[2001:db8::1]/", false),
            ("http://[3fff::1]/", false),
            ("http://[2001:2::1]/", false),
            ("http://[2001:10::1]/", false),
            ("http://[5f00::1]/", false),
            ("http://[4000::1]/", false),
            // IPv4-mapped ::ffff:a.b.c.d.
            ("http://[::ffff:127.0.0.1]/", false),
            ("http://[::ffff:7f00:1]/", false),
            ("http://[::ffff:10.0.0.1]/", false),
            ("http://[::ffff:169.254.169.254]/", false),
            ("http://[::ffff:0.0.0.0]/", false),
            ("http://[::ffff:93.184.216.34]/", true),
            // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
            ("http://[::127.0.0.1]/", false),
            ("http://[::7f00:1]/", false),
            ("http://[::10.0.0.1]/", false),
            ("http://[::93.184.216.34]/", true),
            // IPv4-translated ::ffff:0:a.b.c.d.
            ("http://[::ffff:0:127.0.0.1]/", false),
            ("http://[::ffff:0:93.184.216.34]/", true),
            // NAT64, well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
            ("http://[64:ff9b::7f00:1]/", false),
            ("http://[64:ff9b::127.0.0.1]/", false),
            ("http://[64:ff9b::a9fe:a9fe]/", false),
            ("http://[64:ff9b::c0a8:1]/", false),
            ("http://[64:ff9b::5db8:d822]/", true),
            ("http://[64:ff9b:1::a00:1]/", false),
            ("http://[64:ff9b:1::5db8:d822]/", false),
            // 6to4 2002::/16.
            ("http://[2002:7f00:1::]/", false),
            ("http://[2002:a9fe:a9fe::1]/", false),
            ("http://[2002:a00:1::1]/", false),
            ("http://[2002:5db8:d822::1]/", true),
            // Teredo 2001::/32: server 65.54.227.120; the client's address XOR-ed.
            ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", false), // client 127.0.0.1
            ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", false), // client 10.0.0.1
            ("http://[2001:0:a00:1:8000:63bf:a247:2ddd]/", false),     // server 10.0.0.1
            ("http://[2001:0:4136:e378:8000:63bf:a247:2ddd]/", true),  // client 93.184.210.34
            // ISATAP interface identifiers carrying a private tunnel end.
            ("http://[2606:2800:220:1:0:5efe:a00:1]/", false),
            ("http://[2606:2800:220:1:200:5efe:7f00:1]/", false),
            ("http://[2606:2800:220:1:0:5efe:5db8:d822]/", true),
            // Host names are judged when they resolve; localhost never is a partner.
            ("http://localhost/", false),
            ("http://LOCALHOST./", false),
            ("http://api.localhost/", false),
            ("http://ehr.example.com/", true),
        ];
        let p = policy(true, &[]);
        for (u, allowed) in table {
            let url = Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
            let got = p.check(&url);
            if *allowed {
                assert!(got.is_ok(), "{u} should be allowed: {got:?}");
            } else {
                assert!(
                    matches!(got, Err(Refused::PrivateAddress(_))),
                    "{u} should be refused as non-public: {got:?}"
                );
            }
        }
    }

    #[test]
    fn a_configured_private_network_admits_only_its_own_addresses() {
        let p = policy(true, &["127.0.0.1", "10.20.0.0/16", "fd00:1::/32"]);
        for (u, allowed) in [
            ("http://127.0.0.1:8080/", true),
            ("http://[::ffff:127.0.0.1]/", true),
            ("http://localhost:8080/", true),
            ("http://127.0.0.2/", false),
            ("http://10.20.3.4/", true),
            ("http://10.21.0.1/", false),
            ("http://169.254.169.254/", false),
            ("http://[fd00:1:2::3]/", true),
            ("http://[fd00:2::3]/", false),
            ("http://[::1]/", false),
            // An embedded form is not an alias of an allowed address.
            ("http://[64:ff9b::7f00:1]/", false),
            ("http://[::127.0.0.1]/", false),
        ] {
            let url = Url::parse(u).unwrap();
            assert_eq!(p.check(&url).is_ok(), allowed, "{u}");
        }
    }

    #[test]
    fn networks_parse_with_their_problems_named() {
        for (s, shown) in [
            ("127.0.0.1", "127.0.0.1/32"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
        ] {
            assert_eq!(Network::parse(s).unwrap().to_string(), shown);
        }
        for (s, problem) in [
            ("0.0.0.0/0", "wider than /8"),
            ("::/0", "wider than /8"),
            ("10.0.0.1/8", "host bits set; the network is 10.0.0.0/8"),
            ("10.0.0.0/33", "prefix length"),
            ("ehr.example.com", "not an IP address"),
            ("127.1", "not an IP address"),
            ("::ffff:10.0.0.0/104", "IPv4 form"),
        ] {
            let e = Network::parse(s).unwrap_err();
            assert!(e.contains(problem), "{s}: {e}");
        }
    }

    #[test]
    fn other_schemes_are_refused() {
        let u = Url::parse("file:///etc/passwd").unwrap();
        assert!(matches!(
            policy(true, &["127.0.0.1"]).check(&u),
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

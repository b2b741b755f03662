//! The operator-side allow-list: how far the operator's own credentials and
//! network serve each namespace. A RemediationPolicy is written by a tenant;
//! this list is written by whoever installs the operator, and it alone says
//! which GitHub repositories (and paths in them) and which health-check
//! hosts a namespace's policies may make the operator reach.
//!
//! The default is deny: a namespace without an entry may use no repository,
//! and its health checks may reach only its own Services. The list is read
//! from the file named by `SRE_SPACE_ALLOWLIST` (the chart mounts a
//! ConfigMap there) and read again when it changes. A file that cannot be
//! read or parsed is logged and treated as deny-all: a typo never widens
//! anything, and never stops the operator.
//!
//! ```yaml
//! namespaces:
//! - namespace: shop                 # or namespaceSelector: {matchLabels: {...}}
//!   github:
//!   - repository: acme/deploy       # or acme/* for every repository of acme
//!     paths: [apps/shop]            # path prefixes, by whole components; "/" is all
//!   healthCheckHosts:               # beyond the namespace's own Services
//!   - payments.example.com          # a host name, any port
//!   - "*.partner.example"           # its subdomains
//!   - api.example.com:443           # one port only
//!   - 10.20.0.0/16                  # addresses (needed for loopback and link-local)
//!   - 127.0.0.1:8080
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{info, warn};

use crate::crd::WorkloadSelector;
use crate::workload::selector_matches;

/// The environment variable naming the allow-list file.
pub const ENV: &str = "SRE_SPACE_ALLOWLIST";

/// Where the allow-list is.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Allow-list")]
pub struct AllowListOptions {
    /// The allow-list file (the chart mounts a ConfigMap), read again when it
    /// changes: which GitHub repositories and health-check hosts each
    /// namespace's policies may use. Unset: deny beyond the defaults; an
    /// unreadable or invalid file also denies, and is logged.
    #[arg(long, env = ENV, value_name = "FILE", value_parser = path)]
    pub allowlist: Option<PathBuf>,
}

/// A path, empty included (clap refuses an empty one): the chart may set an
/// empty variable, which means no file.
fn path(v: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(v))
}

/// How often the file is looked at again.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// How long a namespace's labels are trusted.
const LABELS_TTL: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDoc {
    #[serde(default)]
    namespaces: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileEntry {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    namespace_selector: Option<WorkloadSelector>,
    #[serde(default)]
    github: Vec<FileRepo>,
    #[serde(default)]
    health_check_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepo {
    repository: String,
    #[serde(default)]
    paths: Vec<String>,
}

/// A parsed allow-list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    who: Who,
    repos: Vec<RepoGrant>,
    hosts: Vec<HostRule>,
}

#[derive(Clone, Debug, PartialEq)]
enum Who {
    Name(String),
    Selector(WorkloadSelector),
}

#[derive(Clone, Debug, PartialEq)]
struct RepoGrant {
    /// Lowercase: GitHub names are case-insensitive.
    owner: String,
    /// None: every repository of the owner.
    name: Option<String>,
    /// Path prefixes as normalized components; an empty prefix is the whole
    /// repository.
    paths: Vec<Vec<String>>,
}

/// One `healthCheckHosts` entry.
#[derive(Clone, Debug, PartialEq)]
enum HostRule {
    /// A host name (lowercase, no trailing dot); `wildcard` matches its
    /// subdomains only.
    Name {
        name: String,
        wildcard: bool,
        port: Option<u16>,
    },
    /// An address or a range of them.
    Net { net: Net, port: Option<u16> },
}

/// An address range (CIDR).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Addresses no health check reaches unless an address entry allows them:
/// loopback, link-local (cloud metadata lives at 169.254.169.254),
/// unspecified ("this host"), multicast and broadcast.
pub fn is_special(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The namespace a policy lives in, as far as the allow-list cares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tenant {
    pub namespace: String,
    /// The namespace's labels; read only when the list has selectors.
    pub labels: BTreeMap<String, String>,
}

impl Tenant {
    pub fn named(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            labels: BTreeMap::new(),
        }
    }
}

/// A repository path as normalized components: `.` and a leading `./` are
/// dropped; anything that could mean something else to GitHub, to a URL or
/// to a file system is refused (`..`, an absolute path, a backslash, `%`,
/// control characters, empty components).
pub fn path_components(path: &str) -> Result<Vec<String>, String> {
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; give it relative to the repository's root"
        ));
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(format!("{path:?} contains the control character {c:?}"));
    }
    if path.contains('\\') {
        return Err(format!("{path:?} contains a backslash"));
    }
    if path.contains('%') {
        return Err(format!(
            "{path:?} contains '%': percent-encoded paths are refused, write the path as it is"
        ));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "." => {}
            ".." => return Err(format!("{path:?} contains '..'")),
            "" => return Err(format!("{path:?} has an empty component")),
            c => out.push(c.to_string()),
        }
    }
    if out.is_empty() {
        return Err(format!("{path:?} names no file"));
    }
    Ok(out)
}

/// A path prefix of the allow-list: `/` or `.` is the whole repository; a
/// trailing `/` is allowed.
fn prefix_components(prefix: &str) -> Result<Vec<String>, String> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() || p == "." {
        return Ok(Vec::new());
    }
    path_components(p)
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `owner/name` split and checked, as GitHub spells names.
pub fn split_repository(repo: &str) -> Result<(&str, &str), String> {
    let (o, r) = repo
        .split_once('/')
        .ok_or_else(|| format!("repository {repo:?} is not owner/name"))?;
    if !valid_repo_part(o) || !valid_repo_part(r) {
        return Err(format!(
            "repository {repo:?} is not owner/name (letters, digits, '-', '_' and '.')"
        ));
    }
    Ok((o, r))
}

fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn parse_port(p: &str, entry: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{entry:?}: {p:?} is not a port"))
}

fn parse_host_rule(raw: &str) -> Result<HostRule, String> {
    let s = raw.trim();
    if let Some((addr, prefix)) = s.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{raw:?}: /{prefix} is not a prefix length (0 to {max})"))?;
        return Ok(HostRule::Net {
            net: Net {
                addr: canonical(addr),
                prefix,
            },
            port: None,
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(HostRule::Net {
            net: single(ip),
            port: None,
        });
    }
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        return Ok(HostRule::Net {
            net: single(sock.ip()),
            port: Some(parse_port(&sock.port().to_string(), raw)?),
        });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p, raw)?)),
        None => (s, None),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest.to_string(), true),
        None => (host, false),
    };
    if !valid_host_name(&name) {
        return Err(format!(
            "{raw:?} is neither a host name, *.domain, host:port, an IP address nor a CIDR range"
        ));
    }
    Ok(HostRule::Name {
        name,
        wildcard,
        port,
    })
}

fn single(ip: IpAddr) -> Net {
    let ip = canonical(ip);
    Net {
        addr: ip,
        prefix: if ip.is_ipv4() { 32 } else { 128 },
    }
}

/// Parses the allow-list file. The error names the entry and says what is
/// wrong with it.
pub fn parse(text: &str) -> Result<AllowList, String> {
    if text.trim().is_empty() {
        return Ok(AllowList::default());
    }
    let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for (i, e) in doc.namespaces.into_iter().enumerate() {
        let at = format!("namespaces[{i}]");
        let who = match (e.namespace, e.namespace_selector) {
            (Some(n), None) if valid_host_name(&n) && !n.contains('.') => Who::Name(n),
            (Some(n), None) => {
                return Err(format!("{at}.namespace: {n:?} is not a namespace name"));
            }
            (None, Some(s)) if !(s.match_labels.is_empty() && s.match_expressions.is_empty()) => {
                Who::Selector(s)
            }
            (None, Some(_)) => {
                return Err(format!(
                    "{at}.namespaceSelector is empty; it must name at least one label (an entry for every namespace is written out on purpose, one per namespace)"
                ));
            }
            _ => {
                return Err(format!(
                    "{at}: set exactly one of namespace and namespaceSelector"
                ));
            }
        };
        let mut repos = Vec::new();
        for (j, r) in e.github.into_iter().enumerate() {
            let at = format!("{at}.github[{j}]");
            let lower = r.repository.to_ascii_lowercase();
            let (owner, name) = match lower.split_once('/') {
                Some((o, "*")) if valid_repo_part(o) => (o.to_string(), None),
                _ => {
                    let (o, n) =
                        split_repository(&lower).map_err(|e| format!("{at}.repository: {e}"))?;
                    (o.to_string(), Some(n.to_string()))
                }
            };
            let paths = r
                .paths
                .iter()
                .enumerate()
                .map(|(k, p)| prefix_components(p).map_err(|e| format!("{at}.paths[{k}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            repos.push(RepoGrant { owner, name, paths });
        }
        let hosts = e
            .health_check_hosts
            .iter()
            .enumerate()
            .map(|(k, h)| {
                parse_host_rule(h).map_err(|e| format!("{at}.healthCheckHosts[{k}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        entries.push(Entry { who, repos, hosts });
    }
    Ok(AllowList { entries })
}

/// How a health-check URL's host is reached, once the allow-list lets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A Service of the policy's own namespace, named as cluster DNS would
    /// (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`): its
    /// addresses come from the API, never from the operator's resolver
    /// (whose search path is the operator's namespace, not the policy's).
    OwnService(String),
    /// A host name of the allow-list, resolved by DNS.
    Dns(String),
    /// An address written in the URL.
    Address(IpAddr),
}

/// A health-check URL the allow-list lets through, before its addresses
/// are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub route: Route,
    pub port: u16,
}

impl AllowList {
    /// Denies everything beyond the defaults.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Whether any entry is chosen by namespace labels (so the namespace's
    /// labels must be read).
    pub fn uses_selectors(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.who, Who::Selector(_)))
    }

    fn entries_for<'a>(&'a self, t: &'a Tenant) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| match &e.who {
            Who::Name(n) => *n == t.namespace,
            Who::Selector(s) => selector_matches(s, &t.labels),
        })
    }

    /// Whether `tenant` may use `repo` and, when given, the file at `path`
    /// in it. Err says what is refused and how to allow it.
    pub fn check_github(&self, t: &Tenant, repo: &str, path: Option<&str>) -> Result<(), String> {
        let (owner, name) = split_repository(repo)?;
        let (owner, name) = (owner.to_ascii_lowercase(), name.to_ascii_lowercase());
        let grants: Vec<&RepoGrant> = self
            .entries_for(t)
            .flat_map(|e| e.repos.iter())
            .filter(|g| g.owner == owner && g.name.as_ref().is_none_or(|n| *n == name))
            .collect();
        if grants.is_empty() {
            return Err(format!(
                "repository {repo} is not on the operator's allow-list for namespace {}; \
                 to allow it, add `{{namespace: {}, github: [{{repository: {repo}}}]}}` to the chart's \
                 allowList.namespaces (ConfigMap file {ENV})",
                t.namespace, t.namespace
            ));
        }
        let Some(path) = path else { return Ok(()) };
        let parts = path_components(path)?;
        if grants
            .iter()
            .flat_map(|g| g.paths.iter())
            .any(|prefix| parts.starts_with(prefix))
        {
            return Ok(());
        }
        Err(format!(
            "path {path} of repository {repo} is outside the paths the operator's allow-list gives \
             namespace {}; to allow it, add {path:?} (or a folder above it) to that repository's \
             paths in the chart's allowList.namespaces",
            t.namespace
        ))
    }

    /// Whether an allow-list entry of `tenant` names this address (and, when
    /// the entry has one, this port).
    pub fn address_listed(&self, t: &Tenant, ip: IpAddr, port: u16) -> bool {
        self.entries_for(t).flat_map(|e| e.hosts.iter()).any(|h| {
            matches!(h, HostRule::Net { net, port: p } if net.contains(ip) && p.is_none_or(|p| p == port))
        })
    }

    /// Like `address_listed`, but only entries that name this port: what
    /// the API server needs, so a loopback range allowed for test servers
    /// does not open the API server listening on loopback too.
    fn socket_listed(&self, t: &Tenant, ip: IpAddr, port: u16) -> bool {
        self.entries_for(t).flat_map(|e| e.hosts.iter()).any(
            |h| matches!(h, HostRule::Net { net, port: Some(p) } if net.contains(ip) && *p == port),
        )
    }

    fn name_listed(&self, t: &Tenant, host: &str, port: u16) -> bool {
        self.entries_for(t)
            .flat_map(|e| e.hosts.iter())
            .any(|h| match h {
                HostRule::Name {
                    name,
                    wildcard,
                    port: p,
                } => {
                    let hit = if *wildcard {
                        host.strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
                    } else {
                        host == name
                    };
                    hit && p.is_none_or(|p| p == port)
                }
                HostRule::Net { .. } => false,
            })
    }

    /// Checks a health-check URL of a policy in `tenant`'s namespace before
    /// any lookup: the namespace's own Services by default, anything else
    /// only from the allow-list. Err says what is refused and how to allow it.
    pub fn plan_health_url(&self, t: &Tenant, url: &str) -> Result<Planned, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url}: only http and https are probed"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("{url}: a health-check URL carries no credentials"));
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("{url} has no port"))?;
        let how = |what: &str| {
            format!(
                "health check {url}: {what} is not a Service of namespace {ns} and not on the \
                 operator's allow-list for it; to allow it, add it to healthCheckHosts of namespace \
                 {ns} in the chart's allowList.namespaces",
                ns = t.namespace
            )
        };
        // The URL parser has already normalized the host: IPv4 in any
        // notation (0x7f.1, 2130706433) is dotted, percent-encoding decoded.
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url} has no host"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.plan_address(t, ip, port, &how);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // A name the list gives is looked up as written, even one that
        // could also name a Service: the operator's admin chose it.
        if self.name_listed(t, &host, port) {
            return Ok(Planned {
                route: Route::Dns(host),
                port,
            });
        }
        if let Some(svc) = own_service(&host, &t.namespace) {
            return Ok(Planned {
                route: Route::OwnService(svc),
                port,
            });
        }
        Err(how(&format!("host {host} (port {port})")))
    }

    fn plan_address(
        &self,
        t: &Tenant,
        ip: IpAddr,
        port: u16,
        how: &dyn Fn(&str) -> String,
    ) -> Result<Planned, String> {
        let ip = canonical(ip);
        if self.address_listed(t, ip, port) {
            Ok(Planned {
                route: Route::Address(ip),
                port,
            })
        } else {
            Err(how(&format!("address {ip} (port {port})")))
        }
    }

    /// Checks an address a probe is about to connect to, after any lookup:
    /// loopback, link-local, unspecified and multicast addresses only when an
    /// address entry allows them; the API server only when an entry names
    /// its address and port.
    pub fn check_address(
        &self,
        t: &Tenant,
        ip: IpAddr,
        port: u16,
        api_server: &ApiServer,
    ) -> Result<(), String> {
        let ip = canonical(ip);
        if api_server.is(ip, port) && !self.socket_listed(t, ip, port) {
            return Err(format!(
                "{ip} port {port} is the Kubernetes API server, which health checks do not probe \
                 unless the allow-list names that address and port"
            ));
        }
        if is_special(ip) && !self.address_listed(t, ip, port) {
            return Err(format!(
                "{ip} is a loopback, link-local or otherwise special address, which health checks \
                 reach only when an address entry of the operator's allow-list for namespace {} \
                 covers it",
                t.namespace
            ));
        }
        Ok(())
    }
}

/// The Service a host name means, when it names one of `ns` the way
/// cluster DNS would.
fn own_service(host: &str, ns: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let svc = labels.first()?;
    if !valid_host_name(svc) {
        return None;
    }
    let rest = &labels[1..];
    let ok = matches!(rest, [])
        || rest == [ns]
        || rest == [ns, "svc"]
        || rest == [ns, "svc", "cluster", "local"];
    ok.then(|| svc.to_string())
}

/// Where the Kubernetes API server listens, as the operator knows it: the
/// `kubernetes` Service's cluster addresses (any port) and its endpoints
/// (address and port).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiServer {
    pub any_port: Vec<IpAddr>,
    pub sockets: Vec<(IpAddr, u16)>,
}

impl ApiServer {
    pub fn is(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.any_port.iter().any(|a| canonical(*a) == ip)
            || self
                .sockets
                .iter()
                .any(|(a, p)| canonical(*a) == ip && *p == port)
    }
}

/// Namespaces' labels, with when they were read.
type LabelCache = BTreeMap<String, (Instant, BTreeMap<String, String>)>;

/// The allow-list in force, shared by every stage, read again when its file
/// changes.
pub struct Shared {
    path: Option<PathBuf>,
    /// The list, and the file's text it was made from.
    state: RwLock<(Arc<AllowList>, Option<String>)>,
    labels: Mutex<LabelCache>,
}

impl Shared {
    /// A fixed list (tests, tools).
    pub fn fixed(list: AllowList) -> Arc<Self> {
        Arc::new(Self {
            path: None,
            state: RwLock::new((Arc::new(list), None)),
            labels: Mutex::default(),
        })
    }

    /// The list of the file the options name; deny-all when none is named
    /// (or the file is unreadable or invalid: logged).
    pub fn from_options(o: &AllowListOptions) -> Arc<Self> {
        match o.allowlist.clone().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Self::from_file(path),
            None => {
                info!(
                    "no {ENV}: no namespace may use a GitHub repository, and health checks reach only their own namespace's Services"
                );
                Self::fixed(AllowList::deny_all())
            }
        }
    }

    /// The list of a file, read now and again by `reload`.
    pub fn from_file(path: PathBuf) -> Arc<Self> {
        let shared = Arc::new(Self {
            path: Some(path),
            state: RwLock::new((Arc::new(AllowList::deny_all()), None)),
            labels: Mutex::default(),
        });
        shared.reload();
        shared
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<AllowList> {
        match self.state.read() {
            Ok(s) => s.0.clone(),
            // A writer panicked mid-update: deny rather than guess.
            Err(_) => Arc::new(AllowList::deny_all()),
        }
    }

    /// Reads the file again; logs a change. An unreadable or invalid file
    /// is deny-all until it is fixed.
    pub fn reload(&self) {
        let Some(path) = &self.path else { return };
        let (text, list) = match std::fs::read_to_string(path) {
            Ok(text) => match parse(&text) {
                Ok(list) => (text, Ok(list)),
                Err(e) => (text, Err(e)),
            },
            Err(e) => (
                format!("unreadable: {e}"),
                Err(format!("cannot read it: {e}")),
            ),
        };
        let Ok(mut state) = self.state.write() else {
            return;
        };
        if state.1.as_deref() == Some(text.as_str()) {
            return;
        }
        state.1 = Some(text);
        match list {
            Ok(list) => {
                info!(file = %path.display(), entries = list.entries.len(), "allow-list loaded");
                state.0 = Arc::new(list);
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "the allow-list is invalid; denying everything beyond the defaults until it is fixed");
                state.0 = Arc::new(AllowList::deny_all());
            }
        }
    }

    /// Reads the file again every few seconds (a mounted ConfigMap changes
    /// in place), until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.path.as_ref()?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                me.reload();
            }
        }))
    }

    /// The namespace as the list sees it; its labels are read (and kept a
    /// short while) only when some entry selects by labels. A namespace
    /// whose labels cannot be read matches no selector.
    pub async fn tenant(&self, client: &kube::Client, ns: &str) -> Tenant {
        if !self.current().uses_selectors() {
            return Tenant::named(ns);
        }
        if let Ok(cache) = self.labels.lock()
            && let Some((at, labels)) = cache.get(ns)
            && at.elapsed() < LABELS_TTL
        {
            return Tenant {
                namespace: ns.to_string(),
                labels: labels.clone(),
            };
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        let labels = match tokio::time::timeout(Duration::from_secs(5), api.get_opt(ns)).await {
            Ok(Ok(Some(n))) => n.metadata.labels.unwrap_or_default(),
            Ok(Ok(None)) => BTreeMap::new(),
            Ok(Err(e)) => {
                warn!(namespace = ns, error = %e, "cannot read the namespace's labels; allow-list selectors do not match it");
                BTreeMap::new()
            }
            Err(_) => {
                warn!(
                    namespace = ns,
                    "reading the namespace's labels timed out; allow-list selectors do not match it"
                );
                BTreeMap::new()
            }
        };
        if let Ok(mut cache) = self.labels.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < LABELS_TTL);
            cache.insert(ns.to_string(), (Instant::now(), labels.clone()));
        }
        Tenant {
            namespace: ns.to_string(),
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
namespaces:
- namespace: shop
  github:
  - repository: Acme/Deploy
    paths: [apps/shop/, charts/shop/values.yaml]
  - repository: acme/docs
  healthCheckHosts: [payments.example.com, "*.partner.example", "api.example.com:443", 10.20.0.0/16, "127.0.0.1:8080"]
- namespaceSelector: {matchLabels: {team: payments}}
  github:
  - repository: payments/*
    paths: ["/"]
  healthCheckHosts: [127.0.0.0/8]
"#;

    fn list() -> AllowList {
        parse(LIST).expect("the list parses")
    }

    fn shop() -> Tenant {
        Tenant::named("shop")
    }

    #[test]
    fn a_namespace_without_an_entry_may_use_no_repository() {
        let l = list();
        let err = l
            .check_github(&Tenant::named("other"), "acme/deploy", None)
            .expect_err("denied");
        assert!(
            err.contains("acme/deploy")
                && err.contains("namespace other")
                && err.contains("allowList"),
            "{err}"
        );
        assert!(
            AllowList::deny_all()
                .check_github(&shop(), "acme/deploy", None)
                .is_err()
        );
        assert!(
            parse("")
                .expect("empty is deny-all")
                .check_github(&shop(), "acme/deploy", None)
                .is_err()
        );
    }

    #[test]
    fn repositories_match_case_insensitively_and_owner_wildcards_only_their_owner() {
        let l = list();
        assert!(l.check_github(&shop(), "acme/deploy", None).is_ok());
        assert!(l.check_github(&shop(), "ACME/DEPLOY", None).is_ok());
        assert!(l.check_github(&shop(), "acme/deploy-evil", None).is_err());
        assert!(l.check_github(&shop(), "evil/deploy", None).is_err());
        let payments = Tenant {
            namespace: "billing".into(),
            labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        };
        assert!(
            l.check_github(&payments, "payments/anything", Some("a/b.yaml"))
                .is_ok()
        );
        assert!(l.check_github(&payments, "acme/deploy", None).is_err());
        assert!(
            l.check_github(&Tenant::named("billing"), "payments/anything", None)
                .is_err(),
            "without the label the selector does not match"
        );
    }

    #[test]
    fn paths_match_by_whole_components_not_by_string_prefix() {
        let l = list();
        let ok = |p: &str| l.check_github(&shop(), "acme/deploy", Some(p));
        assert!(ok("apps/shop/values.yaml").is_ok());
        assert!(ok("./apps/shop/values.yaml").is_ok());
        assert!(ok("charts/shop/values.yaml").is_ok());
        let evil = ok("apps/shop-evil/values.yaml").expect_err("a sibling folder");
        assert!(
            evil.contains("apps/shop-evil/values.yaml") && evil.contains("paths"),
            "{evil}"
        );
        assert!(ok("charts/shop/values.yaml.bak").is_err());
        assert!(ok("apps/shop/../../secrets.yaml").is_err());
        assert!(ok("apps/shop/%2e%2e/x").is_err());
        assert!(ok("apps").is_err());
        // A repository given without paths allows issues, no file.
        assert!(l.check_github(&shop(), "acme/docs", None).is_ok());
        assert!(
            l.check_github(&shop(), "acme/docs", Some("README.md"))
                .is_err()
        );
    }

    #[test]
    fn unsafe_paths_are_refused_with_the_reason() {
        for (p, why) in [
            ("../x", "'..'"),
            ("a/../b", "'..'"),
            ("/etc/passwd", "absolute"),
            ("a\\..\\b", "backslash"),
            ("a/%2e%2e/b", "'%'"),
            ("%2egithub/workflows/x.yml", "'%'"),
            ("a%2fb", "'%'"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a//b", "empty component"),
            ("", "empty component"),
        ] {
            let err = path_components(p).expect_err(p);
            assert!(err.contains(why), "{p:?}: {err}");
        }
        assert_eq!(
            path_components("./deploy/./values.yaml").expect("fine"),
            ["deploy", "values.yaml"]
        );
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_entry() {
        for (text, names) in [
            (
                "namespaces: [{namespace: shop, github: [{repository: nope}]}]",
                "namespaces[0].github[0].repository",
            ),
            (
                "namespaces: [{namespace: shop, github: [{repository: a/b, paths: [../x]}]}]",
                "namespaces[0].github[0].paths[0]",
            ),
            (
                "namespaces: [{namespace: shop, healthCheckHosts: [10.0.0.0/40]}]",
                "namespaces[0].healthCheckHosts[0]",
            ),
            (
                "namespaces: [{namespace: shop, healthCheckHosts: [\"bad host!\"]}]",
                "namespaces[0].healthCheckHosts[0]",
            ),
            (
                "namespaces: [{github: []}]",
                "namespaces[0]: set exactly one",
            ),
            (
                "namespaces: [{namespace: a, namespaceSelector: {matchLabels: {x: y}}}]",
                "namespaces[0]: set exactly one",
            ),
            (
                "namespaces: [{namespaceSelector: {}}]",
                "namespaceSelector is empty",
            ),
            (
                "namespaces: [{namespace: shop, repos: []}]",
                "unknown field `repos`",
            ),
            ("namespaces: {", ""),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(names), "{text}: {err}");
        }
    }

    #[test]
    fn an_invalid_or_missing_file_denies_everything_and_a_fixed_one_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("sre-space-allowlist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("allowlist.yaml");
        let shared = Shared {
            path: Some(file.clone()),
            state: RwLock::new((Arc::new(AllowList::deny_all()), None)),
            labels: Mutex::default(),
        };
        shared.reload();
        assert_eq!(*shared.current(), AllowList::deny_all(), "missing file");
        std::fs::write(&file, LIST).expect("write");
        shared.reload();
        assert!(
            shared
                .current()
                .check_github(&shop(), "acme/deploy", None)
                .is_ok()
        );
        std::fs::write(
            &file,
            "namespaces: [{namespace: shop, github: [{repository: nope}]}]",
        )
        .expect("write");
        shared.reload();
        assert_eq!(
            *shared.current(),
            AllowList::deny_all(),
            "a typo widens nothing"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn health_checks_reach_the_namespaces_own_services_by_default() {
        let none = AllowList::deny_all();
        let t = shop();
        for url in [
            "http://quote/healthz",
            "http://quote.shop:8080/healthz",
            "http://quote.shop.svc/healthz",
            "https://quote.shop.svc.cluster.local./healthz",
            "http://QUOTE.Shop.svc.cluster.local:8080/",
        ] {
            let p = none.plan_health_url(&t, url).expect(url);
            assert_eq!(p.route, Route::OwnService("quote".into()), "{url}");
        }
        for url in [
            "http://quote.other:8080/healthz",
            "http://quote.other.svc.cluster.local/healthz",
            "http://kubernetes.default.svc/",
            "http://example.com/",
            "http://10.0.0.5:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/",
            "http://[::1]:8080/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:169.254.169.254]/",
            "http://%31%32%37.0.0.1/",
            "http://quote.shop.svc.cluster.local.evil.example/",
        ] {
            let err = none.plan_health_url(&t, url).expect_err(url);
            assert!(
                err.contains("allow-list") || err.contains("URL"),
                "{url}: {err}"
            );
        }
        assert!(none.plan_health_url(&t, "http://user:pw@quote/").is_err());
        assert!(none.plan_health_url(&t, "file:///etc/passwd").is_err());
    }

    #[test]
    fn listed_hosts_and_addresses_are_reached_and_nothing_near_them() {
        let l = list();
        let t = shop();
        let route = |u: &str| l.plan_health_url(&t, u).map(|p| p.route);
        assert_eq!(
            route("http://payments.example.com:9000/x"),
            Ok(Route::Dns("payments.example.com".into()))
        );
        assert!(route("http://payments.example.com.evil.example/").is_err());
        assert!(route("http://a.partner.example/").is_ok());
        assert!(
            route("http://partner.example/").is_err(),
            "*. is subdomains only"
        );
        assert!(route("https://api.example.com/").is_ok());
        assert!(
            route("http://api.example.com:8080/").is_err(),
            "another port"
        );
        assert!(route("http://10.20.3.4:1/").is_ok());
        assert!(route("http://10.21.0.1/").is_err());
        assert_eq!(
            route("http://127.0.0.1:8080/"),
            Ok(Route::Address("127.0.0.1".parse().expect("ip")))
        );
        assert!(route("http://127.0.0.1:8081/").is_err());
        let by_name = parse("namespaces: [{namespace: shop, healthCheckHosts: [localhost]}]")
            .expect("a list");
        assert_eq!(
            by_name
                .plan_health_url(&t, "http://localhost:8080/")
                .map(|p| p.route),
            Ok(Route::Dns("localhost".into())),
            "a listed name is looked up (and its addresses checked), not taken for a Service"
        );
        assert_eq!(
            AllowList::deny_all()
                .plan_health_url(&t, "http://localhost:8080/")
                .map(|p| p.route),
            Ok(Route::OwnService("localhost".into())),
            "unlisted, a bare name is a Service of the namespace"
        );
    }

    #[test]
    fn special_addresses_and_the_api_server_are_refused_after_resolution_unless_listed() {
        let l = list();
        let t = shop();
        let api = ApiServer {
            any_port: vec!["10.96.0.1".parse().expect("ip")],
            sockets: vec![("127.0.0.1".parse().expect("ip"), 6443)],
        };
        let check =
            |t: &Tenant, ip: &str, port| l.check_address(t, ip.parse().expect("ip"), port, &api);
        for ip in [
            "169.254.169.254",
            "127.0.0.2",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            let err = check(&t, ip, 80).expect_err(ip);
            assert!(err.contains("special"), "{ip}: {err}");
        }
        assert!(
            check(&t, "10.1.2.3", 80).is_ok(),
            "an ordinary address a listed name resolved to"
        );
        assert!(check(&t, "127.0.0.1", 8080).is_ok(), "listed with its port");
        let api_err = check(&t, "10.96.0.1", 443).expect_err("the API server's Service");
        assert!(api_err.contains("API server"), "{api_err}");
        let payments = Tenant {
            namespace: "billing".into(),
            labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        };
        assert!(
            check(&payments, "127.0.0.1", 9000).is_ok(),
            "127.0.0.0/8 is listed"
        );
        assert!(
            check(&payments, "127.0.0.1", 6443).is_err(),
            "but a range without a port does not open the API server on loopback"
        );
    }
}

//! The command line of `sre-space`: its commands, and every setting of the
//! operator as a flag and an environment variable (the chart sets the
//! variables; a flag wins over its variable). Each area declares its options
//! next to what they configure (`config::BreakerOptions`,
//! `llm::LlmOptions`, ...); this module puts them together, parses them
//! once, checks them into [`Settings`], names the `SRE_SPACE_*` variables no
//! setting reads, and renders the reference page `docs/configuration.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::Result;
use crate::allowlist::AllowListOptions;
use crate::config::{BreakerOptions, Config, ScopeOptions};
use crate::dashboard::{DashboardConfig, DashboardOptions};
use crate::github::{GitHubConfig, GitHubOptions};
use crate::kafka::{KafkaConfig, KafkaOptions};
use crate::lease::{LeaseConfig, LeaseOptions};
use crate::llm::{LlmConfig, LlmOptions};
use crate::logging::LoggingOptions;
use crate::prometheus::{PrometheusClient, PrometheusOptions};
use crate::traces::{JaegerQuery, TraceOptions};

/// The prefix of the variables the operator's settings are read from.
pub const PREFIX: &str = "SRE_SPACE_";

/// How to bring `docs/configuration.md` up to date.
pub const REGENERATE: &str = "cargo run -q -p sre-space-operator --bin sre-space -- config-reference > docs/configuration.md";

#[derive(Debug, Parser)]
#[command(
    name = "sre-space",
    version,
    about = "A Kubernetes operator that detects, diagnoses, fixes and verifies incidents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub logging: LoggingOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run(Box<RunOptions>),
    /// Run the diagnosis evaluation over the scenario suite and print the
    /// table; exits non-zero when a scenario is diagnosed wrong or planned
    /// unsafely, or a control opens an incident. With a language model
    /// configured, the model is evaluated too.
    Eval(EvalOptions),
    /// Approve the action an incident waits on: prints it, then writes
    /// `spec.approval` with its id and your username.
    Approve(Decide),
    /// Reject the action an incident waits on; the next step is planned.
    Reject(Decide),
    /// Save the facts of an incident in the cluster as an evaluation scenario.
    Capture(CaptureOptions),
    /// Check an installation from inside the cluster (what `helm test`
    /// runs): the metrics Service answers and a replica leads. Exits
    /// non-zero when a check fails.
    Smoke(SmokeOptions),
    /// Print the verdict on a pull request (a Jules session's): its checks
    /// green, red or pending, what it changes, and whether its incident's
    /// problem recurred since. Exits 0 green, 1 red, 2 pending.
    VerifyPr(crate::jules::verify::VerifyPrOptions),
    /// Print the configuration reference, docs/configuration.md.
    #[command(hide = true)]
    ConfigReference,
}

/// What `sre-space smoke` checks.
#[derive(Debug, Args)]
pub struct SmokeOptions {
    /// The metrics Service, e.g. http://sre-space-metrics:8080.
    #[arg(long)]
    pub url: String,
    /// The Lease the replicas elect a leader on.
    #[arg(long)]
    pub lease: String,
    /// The Lease's namespace (the release's).
    #[arg(long, short)]
    pub namespace: String,
}

/// Every setting of the running operator.
#[derive(Debug, Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub scope: ScopeOptions,
    #[command(flatten)]
    pub lease: LeaseOptions,
    #[command(flatten)]
    pub breaker: BreakerOptions,
    #[command(flatten)]
    pub http: HttpOptions,
    #[command(flatten)]
    pub dashboard: DashboardOptions,
    #[command(flatten)]
    pub links: crate::links::LinkOptions,
    #[command(flatten)]
    pub gitops: crate::workload::managed::DetectionOptions,
    #[command(flatten)]
    pub github: GitHubOptions,
    #[command(flatten)]
    pub llm: LlmOptions,
    #[command(flatten)]
    pub kafka: KafkaOptions,
    #[command(flatten)]
    pub traces: TraceOptions,
    #[command(flatten)]
    pub prometheus: PrometheusOptions,
    #[command(flatten)]
    pub allowlist: AllowListOptions,
    #[command(flatten)]
    pub notify: crate::notify::NotifyOptions,
    #[command(flatten)]
    pub sweep: crate::tier3::sweep::SweepOptions,
    #[command(flatten)]
    pub jules: crate::jules::JulesOptions,
    /// Test hook: with 1, the process aborts right after an action is
    /// recorded and before it is taken, to prove a restarted operator takes
    /// it once.
    #[arg(
        long,
        env = "SRE_SPACE_TEST_CRASH_AFTER_RECORD",
        hide = true,
        value_name = "1",
        default_value = "0",
        action = clap::ArgAction::Set,
        value_parser = one_is_on,
    )]
    pub test_crash_after_record: bool,
}

fn one_is_on(v: &str) -> std::result::Result<bool, std::convert::Infallible> {
    Ok(v == "1")
}

/// The operator's own HTTP server.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Metrics and health")]
pub struct HttpOptions {
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on
    /// this address (the chart: 0.0.0.0:8080); unset: no server.
    #[arg(long, env = "SRE_SPACE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Serve the Alertmanager webhook at POST /webhooks/alertmanager on the
    /// same address, accepting the bearer token in this file (read at each
    /// request, so a rotated Secret counts at once); unset: no receiver.
    #[arg(long, env = "SRE_SPACE_ALERTMANAGER_TOKEN_FILE", value_name = "PATH")]
    pub alertmanager_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalOptions {
    /// The folder of scenario files; controls (situations with no fault)
    /// are in its `controls` folder.
    #[arg(long, default_value = "scenarios")]
    pub scenarios: PathBuf,
    /// The RemediationPolicy whose triggers read the controls and whose
    /// ladder the plans are walked on.
    #[arg(long, default_value = "examples/remediation-policy.yaml")]
    pub policy: PathBuf,
    /// Also print each scenario's root cause as the rules state it.
    #[arg(long)]
    pub causes: bool,
    #[command(flatten)]
    pub llm: LlmOptions,
}

#[derive(Debug, Args)]
pub struct Decide {
    /// The Incident's name.
    pub incident: String,
    /// Its namespace; by default the kubeconfig context's, as kubectl.
    #[arg(long, short)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CaptureOptions {
    #[arg(long, short)]
    pub namespace: String,
    /// The Incident's name.
    #[arg(long)]
    pub incident: String,
    /// The category a correct diagnosis gives.
    #[arg(long)]
    pub expect: String,
    /// The first step a good plan takes (RestartPod, Rollback, ...,
    /// Escalate).
    #[arg(long)]
    pub action: String,
    /// A sentence saying what the scenario is.
    #[arg(long)]
    pub description: String,
    /// Where to write it.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub traces: TraceOptions,
}

/// The running operator's settings, checked: what `runtime::run` starts
/// from.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    /// Leader election; None when this process acts alone.
    pub lease: Option<LeaseConfig>,
    /// The instance the operator's events name.
    pub instance: String,
    pub http_addr: Option<String>,
    /// The Alertmanager webhook's token file; None: no receiver.
    pub alertmanager_token_file: Option<PathBuf>,
    pub dashboard: Option<DashboardConfig>,
    pub github: Option<GitHubConfig>,
    pub llm: Option<LlmConfig>,
    /// The Kafka source's brokers, or why it is off: a bad list does not
    /// stop the operator, the policies with Kafka triggers say why.
    pub kafka: std::result::Result<Option<KafkaConfig>, String>,
    pub traces: Option<JaegerQuery>,
    /// Where the Metric triggers query; None: they are Unknown.
    pub prometheus: Option<PrometheusClient>,
    pub allowlist: AllowListOptions,
    pub notify: crate::notify::NotifyOptions,
    /// The Tier 3 sweep; None when no schedule is set.
    pub sweep: Option<crate::tier3::sweep::SweepConfig>,
    /// Jules sessions for escalated incidents; None without a key.
    pub jules: Option<crate::jules::Jules>,
}

impl Settings {
    /// Checks what depends on more than one setting (a dashboard off
    /// loopback needs a token, a model needs its name, a GitHub App its key)
    /// and builds each area's configuration.
    pub fn from_options(o: RunOptions) -> Result<Self> {
        let mut config = Config::from_options(&o.scope, &o.breaker, o.test_crash_after_record);
        config.dashboard_public_url = o.links.public_url()?;
        config.gitops_detection = o.gitops.clone();
        let llm = LlmConfig::from_options(&o.llm)?.map(|mut c| {
            if config.namespace.is_some() {
                // One namespace watched: no other to leave room for.
                c.namespace_share_percent = 100;
            }
            c
        });
        Ok(Self {
            lease: LeaseConfig::from_options(&o.lease),
            instance: o.lease.pod_name.clone().unwrap_or_else(|| "local".into()),
            http_addr: o.http.http_addr,
            alertmanager_token_file: o.http.alertmanager_token_file,
            dashboard: DashboardConfig::from_options(&o.dashboard, &o.llm)?,
            github: GitHubConfig::from_options(&o.github)?,
            llm,
            kafka: KafkaConfig::from_options(&o.kafka).map_err(|e| e.to_string()),
            traces: crate::traces::from_options(&o.traces)?,
            prometheus: crate::prometheus::from_options(&o.prometheus)?,
            allowlist: o.allowlist,
            notify: o.notify,
            sweep: crate::tier3::sweep::SweepConfig::from_options(&o.sweep)?,
            jules: crate::jules::from_options(&o.jules)?,
            config,
        })
    }
}

/// Parses the process's arguments and environment into the logging
/// settings and the command; on an error (or `--help`) prints it and exits,
/// as clap does.
pub fn parse() -> (LoggingOptions, Command) {
    let args: Vec<OsString> = std::env::args_os().collect();
    parse_with(Cli::command(), args, &|name| std::env::var(name).ok()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` as `parse` does, with the environment read through `env`
/// instead of the process's.
pub fn parse_from<I, T>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> std::result::Result<(LoggingOptions, Command), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    parse_with(with_env(Cli::command(), &env), args, &env)
}

fn parse_with(
    mut cmd: clap::Command,
    mut args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(LoggingOptions, Command), clap::Error> {
    if args.is_empty() {
        args.push("sre-space".into());
    }
    if let Cli {
        command: Some(command),
        logging,
    } = matched(&mut cmd, &args, env)?
    {
        return Ok((logging, command));
    }
    // `sre-space` alone (or with only the logging flags) runs the operator.
    args.insert(1, "run".into());
    match matched(&mut cmd, &args, env)? {
        Cli {
            command: Some(command),
            logging,
        } => Ok((logging, command)),
        Cli { command: None, .. } => Err(cmd.error(ErrorKind::MissingSubcommand, "name a command")),
    }
}

fn matched(
    cmd: &mut clap::Command,
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Cli, clap::Error> {
    let matches = cmd
        .try_get_matches_from_mut(args)
        .map_err(|e| name_variable(e, env))?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(cmd))
}

/// The command with its variables' values taken from `env` instead of the
/// process environment (clap reads that when an argument is declared): a
/// variable that is set becomes the argument's default, which is where clap
/// places a variable, between the command line and the default.
fn with_env(cmd: clap::Command, env: &dyn Fn(&str) -> Option<String>) -> clap::Command {
    let read: Vec<(clap::Id, Option<String>)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let name = a.get_env()?.to_string_lossy().into_owned();
            Some((a.get_id().clone(), env(&name)))
        })
        .collect();
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd;
    for (id, value) in read {
        cmd = cmd.mut_arg(id, |a| {
            let a = a.env(clap::builder::Resettable::Reset);
            match value {
                Some(v) => a.default_value(v),
                None => a,
            }
        });
    }
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, |s| with_env(s, env));
    }
    cmd
}

/// Adds to a bad value's error the variable it came from, when it came from
/// one: clap names only the flag.
fn name_variable(mut error: clap::Error, env: &dyn Fn(&str) -> Option<String>) -> clap::Error {
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return error;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    // The command as declared: a command built for tests reads no variable.
    let mut declared = Cli::command();
    declared.build();
    let Some(variable) = arguments(&declared)
        .into_iter()
        .find(|a| a.to_string() == *arg)
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| env(v).as_deref() == Some(value.as_str()))
    else {
        return error;
    };
    let tip =
        format!("the value is {variable}'s, from the environment: correct or unset {variable}");
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(t)) => t.clone(),
        _ => vec![],
    };
    tips.insert(0, tip.into());
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}

/// Every argument of a command and its subcommands.
fn arguments(cmd: &clap::Command) -> Vec<&clap::Arg> {
    let mut out: Vec<&clap::Arg> = cmd.get_arguments().collect();
    for s in cmd.get_subcommands() {
        out.extend(arguments(s));
    }
    out
}

/// Every variable a setting of any command reads.
fn variables() -> BTreeSet<String> {
    let cmd = Cli::command();
    arguments(&cmd)
        .into_iter()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

/// The `SRE_SPACE_*` variables of `vars` that no setting reads (a typo, or a
/// setting of another tool), each with the variable it most likely meant.
pub fn unread_variables<I, K, V>(vars: I) -> Vec<(String, Option<String>)>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<OsString>,
{
    let known = variables();
    let mut unread: Vec<(String, Option<String>)> = vars
        .into_iter()
        .filter_map(|(k, _)| k.into().into_string().ok())
        .filter(|k| k.starts_with(PREFIX) && !known.contains(k))
        .map(|k| {
            let meant = known
                .iter()
                .map(|n| (distance(&k, n), n))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, n)| n.clone());
            (k, meant)
        })
        .collect();
    unread.sort();
    unread
}

/// Logs each `SRE_SPACE_*` variable of the process that no setting reads.
pub fn warn_unread_variables() {
    for (name, meant) in unread_variables(std::env::vars_os()) {
        match meant {
            Some(meant) => tracing::warn!(
                variable = %name,
                meant = %meant,
                "{name} is set but no setting reads it; did you mean {meant}?"
            ),
            None => tracing::warn!(
                variable = %name,
                "{name} is set but no setting of sre-space reads it"
            ),
        }
    }
}

/// The edit distance between two names: how many characters to insert,
/// delete or replace to make one the other.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The configuration reference: every setting of `sre-space run`, by area,
/// with its flag, variable, default and meaning.
pub fn reference() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = format!(
        "# Configuration\n\n\
         Every setting of the operator is a flag of `sre-space run` and an \
         environment variable; a flag wins over its variable. The Helm chart \
         sets the variables ([helm.md](helm.md)). `sre-space run --help` \
         lists the same settings with the values in force; a secret's value \
         is never shown. At start the operator logs a warning for each \
         `{PREFIX}*` variable that no setting reads, naming the setting it \
         most likely meant.\n\n\
         A value that cannot be used stops the operator at start with a \
         message naming the flag (and the variable it came from) and what to \
         fix. The Kafka brokers are the exception: a bad list turns the Kafka \
         source off, and each policy with Kafka triggers says why.\n\n\
         This page is written from the flags' definitions; after changing \
         one, run\n\n```sh\n{REGENERATE}\n```\n"
    );
    let run = cmd.find_subcommand("run");
    let mut sections: BTreeMap<usize, (String, Vec<String>)> = BTreeMap::new();
    let mut order: Vec<String> = vec![];
    for arg in run.into_iter().flat_map(|r| r.get_arguments()) {
        if arg.is_hide_set() || arg.get_long().is_none_or(|l| l == "help") {
            continue;
        }
        let heading = arg.get_help_heading().unwrap_or("Other").to_string();
        let index = match order.iter().position(|h| *h == heading) {
            Some(i) => i,
            None => {
                order.push(heading.clone());
                order.len() - 1
            }
        };
        sections
            .entry(index)
            .or_insert_with(|| (heading, vec![]))
            .1
            .push(row(arg));
    }
    for (heading, rows) in sections.into_values() {
        out.push_str(&format!(
            "\n## {heading}\n\n| flag | variable | default | meaning |\n|---|---|---|---|\n"
        ));
        for r in rows {
            out.push_str(&r);
        }
    }
    out.push_str(
        "\n## The other commands\n\n\
         `sre-space eval` reads the language model settings above (the model \
         is evaluated beside the rules when a base URL is set), \
         `sre-space capture` reads `SRE_SPACE_JAEGER_QUERY`, and every \
         command reads the logging settings.\n\n\
         ## Read from the environment only\n\n\
         | variable | read by | meaning |\n|---|---|---|\n\
         | `KUBECONFIG` | the Kubernetes client | the kubeconfig outside a cluster; in a pod, its service account is used |\n\
         | `KUBERNETES_SERVICE_HOST` | the health checks | set by the kubelet in a pod: the API server's address, which a health check reaches only when the allow-list names it |\n\
         | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and the other `OTEL_EXPORTER_OTLP_*` | the OpenTelemetry exporter | as the OpenTelemetry specification says, when spans are exported |\n",
    );
    out
}

/// One setting as a table row.
fn row(arg: &clap::Arg) -> String {
    let cell = |s: String| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    };
    let value = arg
        .get_value_names()
        .map(|v| format!(" <{}>", v.join(" ")))
        .unwrap_or_default();
    let flag = format!("`--{}{value}`", arg.get_long().unwrap_or_default());
    let variable = arg
        .get_env()
        .map(|v| format!("`{}`", v.to_string_lossy()))
        .unwrap_or_default();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|d| format!("`{}`", d.to_string_lossy()))
        .collect();
    let mut meaning = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    // Clap drops the full stop of a one-sentence help.
    if !meaning.is_empty() && !meaning.ends_with('.') {
        meaning.push('.');
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| format!("`{}`", p.get_name()))
        .collect();
    if !possible.is_empty() {
        meaning.push_str(&format!(" One of {}.", possible.join(", ")));
    }
    if arg.is_hide_env_values_set() {
        meaning.push_str(" A secret: its value is never shown.");
    }
    format!(
        "| {} | {} | {} | {} |\n",
        cell(flag),
        cell(variable),
        cell(defaults.join(", ")),
        cell(meaning)
    )
}

#[cfg(test)]
mod tests;

//! The SRE-Space operator, and its offline tools.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sre_space::approve;
use sre_space::brain::{self, eval};
use sre_space::clock::{Clock, SystemClock};
use sre_space::config::Config;
use sre_space::crd::{ActionType, ApprovalDecision, Category, Incident, RemediationPolicy};
use sre_space::llm::{ChatModel, LlmConfig, OpenAiModel};

#[derive(Parser)]
#[command(
    version,
    about = "A Kubernetes operator that detects, diagnoses, fixes and verifies incidents"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run,
    /// Run the diagnosis evaluation over the scenario suite and print the
    /// table. With SRE_SPACE_LLM_* set, the model is evaluated too.
    Eval {
        /// The folder of scenario files; controls (situations with no
        /// fault) are in its `controls` folder.
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
        /// The RemediationPolicy whose triggers read the controls and whose
        /// ladder the plans are walked on.
        #[arg(long, default_value = "examples/remediation-policy.yaml")]
        policy: PathBuf,
        /// Also print each scenario's root cause as the rules state it.
        #[arg(long)]
        causes: bool,
    },
    /// Approve the action an incident waits on: prints it, then writes
    /// `spec.approval` with its id and your username.
    Approve(Decide),
    /// Reject the action an incident waits on; the next step is planned.
    Reject(Decide),
    /// Check an installation from inside the cluster (what `helm test`
    /// runs): the metrics Service answers and a replica leads. Exits
    /// non-zero when a check fails.
    Smoke {
        /// The metrics Service, e.g. http://sre-space-metrics:8080.
        #[arg(long)]
        url: String,
        /// The Lease the replicas elect a leader on.
        #[arg(long)]
        lease: String,
        /// The Lease's namespace (the release's).
        #[arg(long, short)]
        namespace: String,
    },
    /// Save the facts of an incident in the cluster as an evaluation scenario.
    Capture {
        #[arg(long, short)]
        namespace: String,
        /// The Incident's name.
        #[arg(long)]
        incident: String,
        /// The category a correct diagnosis gives.
        #[arg(long)]
        expect: String,
        /// The first step a good plan takes (RestartPod, Rollback, ...,
        /// Escalate).
        #[arg(long)]
        action: String,
        /// A sentence saying what the scenario is.
        #[arg(long)]
        description: String,
        /// Where to write it.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct Decide {
    /// The Incident's name.
    incident: String,
    /// Its namespace; by default the kubeconfig context's, as kubectl.
    #[arg(long, short)]
    namespace: Option<String>,
}

fn kube_config_without_retries(mut c: kube::Config) -> kube::Config {
    // The reconcile loop is the retry mechanism: it records what happened
    // and tries again with its own backoff. The client's built-in retry of
    // 429s would instead wait minutes on an eviction that a
    // PodDisruptionBudget refuses (also a 429), hiding why from the Incident.
    c.default_retry = false;
    c
}

async fn decide(d: Decide, decision: ApprovalDecision) -> Result<(), Box<dyn std::error::Error>> {
    let config = kube::Config::infer().await?;
    let namespace = d.namespace.unwrap_or(config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    let done = approve::decide(
        &client,
        &namespace,
        &d.incident,
        decision,
        &mut std::io::stdout(),
    )
    .await?;
    println!("{done}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One TLS crypto provider for the Kubernetes and the model clients alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _logging = sre_space::logging::init()?;
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = Config::from_env()?;
            let client =
                kube::Client::try_from(kube_config_without_retries(kube::Config::infer().await?))?;
            sre_space::runtime::run(client, config).await?;
        }
        Command::Approve(d) => decide(d, ApprovalDecision::Approve).await?,
        Command::Reject(d) => decide(d, ApprovalDecision::Reject).await?,
        Command::Eval {
            scenarios,
            policy,
            causes,
        } => {
            let suite = eval::load(&scenarios)?;
            let controls = eval::load_controls(&scenarios.join("controls"))?;
            let text = std::fs::read_to_string(&policy)
                .map_err(|e| format!("--policy {}: {e}", policy.display()))?;
            let policy: RemediationPolicy = serde_yaml::from_str(&text)
                .map_err(|e| format!("--policy {}: {e}", policy.display()))?;
            let model: Option<(Arc<dyn ChatModel>, LlmConfig)> = match LlmConfig::from_env()? {
                Some(c) => Some((Arc::new(OpenAiModel::new(&c)?), c)),
                None => None,
            };
            let rows = eval::run(
                &suite,
                &policy.spec,
                model.as_ref().map(|(m, c)| (m.as_ref(), c)),
            )
            .await;
            let checked = eval::run_controls(&controls, &policy.spec);
            print!("{}", eval::render(&rows));
            print!("{}", eval::render_controls(&checked));
            if causes {
                print!("\n{}", eval::render_causes(&rows));
            }
            let wrong = rows.iter().filter(|r| !r.passed()).count();
            let fired = checked.iter().filter(|c| !c.signals.is_empty()).count();
            if wrong + fired > 0 {
                return Err(format!(
                    "{wrong} scenario(s) diagnosed wrong or planned unsafely, {fired} control(s) opened an incident"
                )
                .into());
            }
        }
        Command::Smoke {
            url,
            lease,
            namespace,
        } => {
            let client = kube::Client::try_default().await?;
            let checks = sre_space::smoke::run(&client, &namespace, &lease, &url).await;
            for c in &checks {
                println!("{c}");
            }
            let failed = checks.iter().filter(|c| !c.passed).count();
            if failed > 0 {
                return Err(format!("{failed} of {} checks failed", checks.len()).into());
            }
        }
        Command::Capture {
            namespace,
            incident,
            expect,
            action,
            description,
            out,
        } => {
            let expected: Category =
                serde_json::from_value(serde_json::Value::String(expect.clone()))
                    .map_err(|_| format!("--expect {expect:?} is not a category"))?;
            let expected_action: ActionType =
                serde_json::from_value(serde_json::Value::String(action.clone()))
                    .map_err(|_| format!("--action {action:?} is not an action type"))?;
            let client = kube::Client::try_default().await?;
            let api: kube::Api<Incident> = kube::Api::namespaced(client.clone(), &namespace);
            let inc = api.get(&incident).await?;
            let memory = sre_space::memory::load(&client, &namespace, &incident)
                .await?
                .map(|m| m.spec);
            let traces = sre_space::traces::from_env()?;
            let facts = brain::gather(
                &client,
                &inc,
                memory,
                traces
                    .as_ref()
                    .map(|t| t as &dyn sre_space::traces::TraceStore),
                SystemClock.now(),
            )
            .await?;
            let scenario = eval::Scenario {
                name: out
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or(incident.clone()),
                description,
                expected_category: expected,
                expected_workload: inc.spec.target.name.clone(),
                expected_action,
                facts,
            };
            std::fs::write(&out, serde_json::to_string_pretty(&scenario)? + "\n")?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

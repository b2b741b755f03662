//! The SRE-Space operator, and its offline tools.

use std::sync::Arc;

use sre_space::approve;
use sre_space::brain::{self, eval};
use sre_space::cli::{CaptureOptions, Command, Decide, EvalOptions, Settings};
use sre_space::clock::{Clock, SystemClock};
use sre_space::crd::{ActionType, ApprovalDecision, Category, Incident, RemediationPolicy};
use sre_space::llm::{ChatModel, LlmConfig, OpenAiModel};

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

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // What to fix, as the error says it (not its debug form).
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<u8, Box<dyn std::error::Error>> {
    // One TLS crypto provider for the Kubernetes and the model clients alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (logging, command) = sre_space::cli::parse();
    let _logging = sre_space::logging::init(&logging)?;
    sre_space::cli::warn_unread_variables();
    match command {
        Command::Run(options) => {
            let settings = Settings::from_options(*options)?;
            let client =
                kube::Client::try_from(kube_config_without_retries(kube::Config::infer().await?))?;
            sre_space::runtime::run(client, settings).await?;
        }
        Command::Approve(d) => decide(d, ApprovalDecision::Approve).await?,
        Command::Reject(d) => decide(d, ApprovalDecision::Reject).await?,
        Command::Eval(options) => run_eval(options).await?,
        Command::Capture(options) => capture(options).await?,
        Command::Smoke(o) => smoke(o).await?,
        Command::ConfigReference => print!("{}", sre_space::cli::reference()),
        Command::VerifyPr(o) => {
            // No verdict is "unknown": 2, never the 1 of a red one.
            return Ok(
                match sre_space::jules::verify::run(&o, &mut std::io::stdout()).await {
                    Ok(code) => u8::try_from(code).unwrap_or(2),
                    Err(e) => {
                        eprintln!("error: {e}");
                        2
                    }
                },
            );
        }
    }
    Ok(0)
}

async fn smoke(o: sre_space::cli::SmokeOptions) -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let checks = sre_space::smoke::run(&client, &o.namespace, &o.lease, &o.url).await;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(format!("{failed} of {} checks failed", checks.len()).into());
    }
    Ok(())
}

async fn run_eval(o: EvalOptions) -> Result<(), Box<dyn std::error::Error>> {
    let suite = eval::load(&o.scenarios)?;
    let controls = eval::load_controls(&o.scenarios.join("controls"))?;
    let text = std::fs::read_to_string(&o.policy)
        .map_err(|e| format!("--policy {}: {e}", o.policy.display()))?;
    let policy: RemediationPolicy =
        serde_yaml::from_str(&text).map_err(|e| format!("--policy {}: {e}", o.policy.display()))?;
    let model: Option<(Arc<dyn ChatModel>, LlmConfig)> = match LlmConfig::from_options(&o.llm)? {
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
    if o.causes {
        print!("\n{}", eval::render_causes(&rows));
    }
    eval::verdict(&rows, &checked)?;
    Ok(())
}

async fn capture(o: CaptureOptions) -> Result<(), Box<dyn std::error::Error>> {
    let CaptureOptions {
        namespace,
        incident,
        expect,
        action,
        description,
        out,
        traces,
    } = o;
    let expected: Category = serde_json::from_value(serde_json::Value::String(expect.clone()))
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
    let traces = sre_space::traces::from_options(&traces)?;
    let facts = brain::gather(
        &client,
        &inc,
        memory,
        traces
            .as_ref()
            .map(|t| t as &dyn sre_space::traces::TraceStore),
        None,
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
    Ok(())
}

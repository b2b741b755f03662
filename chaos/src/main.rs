//! `sre-chaos`: breaks a Deployment on purpose, the way real faults do, so
//! SRE-Space can be seen handling it; `revert` undoes it. It also flips the
//! demo services' fault switches (`conversion`, `latency`) and drives
//! customers through the demo business (`load`).

use clap::{Parser, Subcommand};
use sre_chaos::Target;
use sre_chaos::load::{self, Plan};
use sre_chaos::switch;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    fault: Fault,
    /// Namespace of the target.
    #[arg(long, short, global = true, default_value = "default")]
    namespace: String,
    /// The Deployment to break.
    #[arg(long, short, global = true)]
    target: Option<String>,
    /// Say what would change; change nothing.
    #[arg(long, global = true)]
    dry_run: bool,
}

/// Where a demo service's switch is, and the token it wants.
#[derive(clap::Args)]
struct Switch {
    /// The service's base URL, e.g. http://127.0.0.1:18082.
    #[arg(long)]
    url: String,
    /// The service's CHAOS_TOKEN (default: the CHAOS_TOKEN variable, which
    /// keeps it out of the process list).
    #[arg(long)]
    token: Option<String>,
    /// Turn the fault off instead.
    #[arg(long)]
    off: bool,
}

#[derive(Subcommand)]
enum Fault {
    /// A container is OOMKilled by the kernel and restarted.
    Oom,
    /// A pod's containers crash repeatedly (CrashLoopBackOff).
    Crashloop {
        /// Restarts already counted.
        #[arg(long, default_value_t = 5)]
        restarts: i32,
    },
    /// A rollout ships a bad argument; the new pods crash-loop.
    BadRollout,
    /// Undoes the faults injected into the target.
    Revert,
    /// Purchases fail at payment on a policy-service (HTTP 502, no
    /// policy_purchased event); --off restores them.
    Conversion {
        #[command(flatten)]
        switch: Switch,
    },
    /// A demo service's main operation gets slower; --off restores it.
    Latency {
        #[command(flatten)]
        switch: Switch,
        /// The added delay.
        #[arg(long, default_value_t = 500)]
        millis: u64,
    },
    /// Customers through the demo frontend: quotes, and purchases of a
    /// share of them. Prints each second's counts, then the totals.
    Load {
        /// The frontend's base URL, e.g. http://127.0.0.1:18080.
        #[arg(long)]
        frontend: String,
        /// Customers per second, on average (arrivals vary at random).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// The share of quoted customers who buy.
        #[arg(long, default_value_t = 0.3)]
        buy_ratio: f64,
        /// How long: 60s, 5m, ...
        #[arg(long, default_value = "60s", value_parser = load::parse_duration)]
        duration: std::time::Duration,
        /// Distinct customers.
        #[arg(long, default_value_t = 1000)]
        users: u32,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sre-chaos: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.fault {
        Fault::Conversion { switch } => {
            return flip(&switch, "conversion", None, cli.dry_run).await;
        }
        Fault::Latency { switch, millis } => {
            let settings = serde_json::json!({ "millis": millis });
            return flip(&switch, "latency", Some(settings), cli.dry_run).await;
        }
        Fault::Load {
            frontend,
            rate,
            buy_ratio,
            duration,
            users,
        } => {
            let plan = Plan {
                frontend,
                rate,
                buy_ratio,
                duration,
                users,
            };
            let total = load::run(&plan, |second, tally| {
                println!("{}", tally.line(&format!("{second:>4}s")));
            })
            .await?;
            let secs = plan.duration.as_secs_f64();
            println!("{}", total.line("total"));
            println!(
                "sustained {:.1} requests/s ({:.1} customers/s asked)",
                total.requests() as f64 / secs,
                plan.rate
            );
            return Ok(());
        }
        _ => {}
    }
    let deployment = cli.target.ok_or("--target DEPLOYMENT is required")?;
    let target = Target {
        client: kube::Client::try_default().await?,
        namespace: cli.namespace,
        deployment,
        dry_run: cli.dry_run,
    };
    let report = match cli.fault {
        Fault::Oom => target.oom().await?,
        Fault::Crashloop { restarts } => target.crashloop(restarts).await?,
        Fault::BadRollout => target.bad_rollout().await?,
        Fault::Revert => target.revert().await?,
        Fault::Conversion { .. } | Fault::Latency { .. } | Fault::Load { .. } => {
            return Err("handled above".into());
        }
    };
    let prefix = if target.dry_run {
        "would change: "
    } else {
        "changed: "
    };
    for line in report.changed {
        println!("{prefix}{line}");
    }
    Ok(())
}

async fn flip(
    s: &Switch,
    fault: &str,
    settings: Option<serde_json::Value>,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let on = !s.off;
    let state = if on { "on" } else { "off" };
    if dry_run {
        let (method, url) = switch::request(&s.url, fault, on)?;
        println!("would change: {method} {url} ({fault} {state})");
        return Ok(());
    }
    let token = s
        .token
        .clone()
        .or_else(|| std::env::var("CHAOS_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or("--token or CHAOS_TOKEN is required")?;
    let answer = switch::flip(&s.url, fault, &token, on, settings.as_ref()).await?;
    println!("changed: {fault} {state} at {}: {answer}", s.url);
    Ok(())
}

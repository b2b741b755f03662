//! `sre-chaos`: breaks a Deployment on purpose, the way real faults do, so
//! SRE-Space can be seen handling it; `revert` undoes it.

use clap::{Parser, Subcommand};
use sre_chaos::Target;

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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
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

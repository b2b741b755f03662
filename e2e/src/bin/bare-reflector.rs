//! The memory baseline of the benchmark: a plain kube-runtime reflector that
//! stores full Pods of one namespace, nothing else. It prints `synced` once
//! its store holds every pod, then its resident memory every second.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ns = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bare-reflector NAMESPACE"))?;
    let client = Client::try_default().await?;
    let (store, writer) = reflector::store::<Pod>();
    let stream = reflector(
        writer,
        watcher(
            Api::<Pod>::namespaced(client, &ns),
            watcher::Config::default(),
        ),
    )
    .touched_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    store.wait_until_ready().await?;
    println!("synced {}", store.state().len());
    loop {
        println!(
            "rss_kib {} pods {}",
            sre_space_e2e::rss_kib(std::process::id()),
            store.state().len()
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

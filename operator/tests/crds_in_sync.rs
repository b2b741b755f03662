//! The CRDs checked in under `crds/` are what users install; they must be
//! exactly what the Rust types generate, and the Helm chart must carry the
//! same files.

use std::path::Path;

#[test]
fn checked_in_crds_match_crdgen_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let files = sre_space::crd::rendered_files().expect("CRDs render");
    for (name, generated) in &files {
        let checked_in = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `make crds`"));
        assert!(
            checked_in == *generated,
            "crds/{name} differs from what crdgen prints; run `make crds` and commit"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let expected: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        on_disk, expected,
        "crds/ holds a file crdgen does not generate"
    );
}

/// The Helm chart installs its own copy of the CRDs (a chart cannot read
/// files outside its folder); it must be the same as crds/.
#[test]
fn the_charts_crds_are_the_checked_in_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml_files = |dir: &Path| -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{} is missing ({e})", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let source = yaml_files(&root.join("crds"));
    let chart = yaml_files(&root.join("charts/sre-space/files/crds"));
    let names = |f: &[(String, String)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&source),
        "charts/sre-space/files/crds/ must hold the files of crds/; run `make crds`"
    );
    for ((name, in_chart), (_, in_crds)) in chart.iter().zip(&source) {
        assert!(
            in_chart == in_crds,
            "charts/sre-space/files/crds/{name} differs from crds/{name}; run `make crds` and commit"
        );
    }
}

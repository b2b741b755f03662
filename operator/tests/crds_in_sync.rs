//! The CRDs checked in under `crds/` are what users install; they must be
//! exactly what the Rust types generate.

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

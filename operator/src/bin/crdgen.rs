//! Prints the CRD YAML of every SRE-Space resource. With `--out-dir DIR` it
//! writes one file per CRD instead, as checked in under `crds/`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = sre_space::crd::rendered_files()?;
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, None) => {
            for (_, yaml) in files {
                print!("{yaml}");
            }
        }
        (Some("--out-dir"), Some(dir)) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in files {
                std::fs::write(dir.join(&name), yaml)?;
                eprintln!("wrote {}", dir.join(name).display());
            }
        }
        _ => return Err("usage: crdgen [--out-dir DIR]".into()),
    }
    Ok(())
}

//! The SRE-Space operator.

fn main() {
    // Filled in by the controller; for now the binary only reports its version.
    eprintln!("sre-space {}", env!("CARGO_PKG_VERSION"));
}

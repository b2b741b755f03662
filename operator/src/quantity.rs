//! Memory quantities as Kubernetes writes them (`512Mi`, `1G`, `268435456`).

/// Parses a memory quantity into bytes. Fractions are allowed (`1.5Gi`).
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes.round() as u64)
}

/// Formats bytes in the largest binary unit that keeps a whole number
/// (`384Mi`), falling back to Mi rounded up.
pub fn format_bytes(bytes: u64) -> String {
    const MI: u64 = 1024 * 1024;
    const GI: u64 = 1024 * MI;
    if bytes >= GI && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else {
        format!("{}Mi", bytes.div_ceil(MI))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_kubernetes_uses() {
        assert_eq!(parse_bytes("256Mi"), Some(256 * 1024 * 1024));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("128M"), Some(128_000_000));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("12Qi"), None);
    }

    #[test]
    fn formats_in_whole_units() {
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(384 * 1024 * 1024), "384Mi");
        assert_eq!(format_bytes(128_000_000), "123Mi");
    }
}

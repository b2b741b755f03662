//! Changing one value in a YAML file of the GitOps repository while keeping
//! every other byte: comments, order, quoting and spacing stay as they are.

/// Where the value sits and what it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    /// 0-based line index.
    pub line: usize,
    /// Byte range of the value within that line.
    pub start: usize,
    pub end: usize,
    /// The value without quotes.
    pub value: String,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#') && t != "---"
}

/// The value part of `key: value` on this line, if the line is that key.
fn value_span(line: &str, key: &str) -> Option<(usize, usize)> {
    let body_start = indent(line);
    let body = &line[body_start..];
    let body = body
        .strip_prefix("- ")
        .map(|b| b.trim_start())
        .unwrap_or(body);
    let offset = line.len() - body.len();
    let rest = body.strip_prefix(key)?.strip_prefix(':')?;
    let lead = rest.len() - rest.trim_start().len();
    let start = offset + key.len() + 1 + lead;
    // The value ends before a comment.
    let tail = &line[start..];
    let end_rel = tail.find(" #").unwrap_or(tail.len());
    let end = start + tail[..end_rel].trim_end().len();
    Some((start, end))
}

fn unquote(v: &str) -> String {
    v.trim_matches(|c| c == '"' || c == '\'').to_string()
}

/// Finds a dotted key (`a.b.c`) in a block-style YAML mapping.
pub fn find_key(text: &str, dotted: &str) -> Result<Located, String> {
    let lines: Vec<&str> = text.lines().collect();
    let keys: Vec<&str> = dotted.split('.').collect();
    let (mut from, mut to, mut parent_indent) = (0, lines.len(), None::<usize>);
    for (depth, key) in keys.iter().enumerate() {
        let mut found = None;
        for (i, line) in lines.iter().enumerate().take(to).skip(from) {
            if !is_content(line) {
                continue;
            }
            let ind = indent(line);
            if parent_indent.is_some_and(|p| ind <= p) {
                break;
            }
            if value_span(line, key).is_some() {
                found = Some((i, ind));
                break;
            }
        }
        let Some((i, ind)) = found else {
            return Err(format!(
                "key {dotted}: {} not found",
                keys[..=depth].join(".")
            ));
        };
        if depth + 1 == keys.len() {
            let (start, end) = value_span(lines[i], key).ok_or("unreachable")?;
            let value = unquote(&lines[i][start..end]);
            if value.is_empty() {
                return Err(format!("key {dotted} has no scalar value on its line"));
            }
            return Ok(Located {
                line: i,
                start,
                end,
                value,
            });
        }
        // The block under this key: the following lines indented deeper.
        let end = lines
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, l)| is_content(l) && indent(l) <= ind)
            .map(|(j, _)| j)
            .unwrap_or(lines.len());
        from = i + 1;
        to = end;
        parent_indent = Some(ind);
    }
    Err(format!("key {dotted} not found"))
}

/// Finds `resources.limits.memory` of the named container in a manifest.
pub fn find_container_memory(text: &str, container: &str) -> Result<Located, String> {
    find_in_container(text, container, "resources.limits.memory")
}

/// Finds the `image` of the named container in a manifest.
pub fn find_container_image(text: &str, container: &str) -> Result<Located, String> {
    find_in_container(text, container, "image")
}

/// Finds a dotted key inside the named container's item of a manifest
/// (the item whose first line is `- name: <container>`).
fn find_in_container(text: &str, container: &str, dotted: &str) -> Result<Located, String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            value_span(l, "name").is_some()
                && unquote(t.trim_start_matches("name:").trim()) == container
        })
        .ok_or_else(|| format!("no container named {container}"))?;
    let item_indent = indent(lines[start]);
    // The container's block ends at the next list item or less indented line.
    let end = lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| {
            is_content(l)
                && (indent(l) < item_indent
                    || (indent(l) <= item_indent && l.trim_start().starts_with("- ")))
        })
        .map(|(j, _)| j)
        .unwrap_or(lines.len());
    let block: String = lines[start + 1..end].join("\n");
    let found =
        find_key(&block, dotted).map_err(|_| format!("container {container} has no {dotted}"))?;
    Ok(Located {
        line: start + 1 + found.line,
        ..found
    })
}

/// Replaces a located value, keeping the rest of the file byte for byte.
pub fn replace(text: &str, at: &Located, new_value: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == at.line {
            let old = &line[at.start..at.end];
            let quote = old.chars().next().filter(|c| *c == '"' || *c == '\'');
            out.push_str(&line[..at.start]);
            match quote {
                Some(q) => {
                    out.push(q);
                    out.push_str(new_value);
                    out.push(q);
                }
                None => out.push_str(new_value),
            }
            out.push_str(&line[at.end..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Whether writing `proposed` where the file says `current` raises the
/// limit. The operator only ever raises: a file that already holds as much or
/// more (someone raised it by hand, or a merged change has not reached the
/// cluster yet) is left alone, and so is a value it cannot read as a
/// quantity (a template expression).
pub fn raises(current: &str, proposed: &str) -> Result<(), String> {
    let (Ok(cur), Ok(new)) = (
        crate::quantity::parse_bytes(current),
        crate::quantity::parse_bytes(proposed),
    ) else {
        return Err(format!(
            "cannot compare the file's {current:?} with the proposed {proposed:?} as memory quantities; \
             not changing it"
        ));
    };
    if cur >= new {
        return Err(format!(
            "the file already sets {current}, at or above the proposed {proposed}; the operator never lowers a limit"
        ));
    }
    Ok(())
}

/// A unified diff of a one-line change, with three lines of context.
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let Some(changed) = a.iter().zip(b.iter()).position(|(x, y)| x != y) else {
        return String::new();
    };
    let lo = changed.saturating_sub(3);
    let hi = (changed + 4).min(a.len());
    let mut out = format!(
        "--- a/{path}\n+++ b/{path}\n@@ -{},{} +{},{} @@\n",
        lo + 1,
        hi - lo,
        lo + 1,
        hi - lo
    );
    for i in lo..hi {
        if i == changed {
            out.push_str(&format!("-{}\n+{}\n", a[i], b[i]));
        } else {
            out.push_str(&format!(" {}\n", a[i]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "# Demo services\nquoteService:\n  resources:\n    limits:\n      memory: 128Mi # raised in INC-1\npolicyService:\n  replicas: 2\n  resources:\n    requests:\n      memory: 32Mi\n    limits:\n      memory: \"64Mi\"\n";

    #[test]
    fn a_values_key_is_changed_and_nothing_else() {
        let at = find_key(VALUES, "policyService.resources.limits.memory").unwrap();
        assert_eq!(at.value, "64Mi");
        let after = replace(VALUES, &at, "96Mi");
        assert_eq!(after, VALUES.replace("\"64Mi\"", "\"96Mi\""));
        let diff = unified_diff("values.yaml", VALUES, &after);
        assert_eq!(
            diff.lines()
                .filter(|l| l.starts_with('-') && !l.starts_with("---"))
                .count(),
            1
        );
        assert!(diff.contains("+      memory: \"96Mi\""), "{diff}");
        let at = find_key(VALUES, "quoteService.resources.limits.memory").unwrap();
        assert_eq!(
            replace(VALUES, &at, "192Mi"),
            VALUES.replace("128Mi #", "192Mi #"),
            "comments stay"
        );
    }

    #[test]
    fn only_a_raise_is_proposed() {
        assert!(raises("64Mi", "96Mi").is_ok());
        assert!(raises("64Mi", "0.1Gi").is_ok());
        let same = raises("96Mi", "96Mi").expect_err("equal");
        assert!(same.contains("never lowers"), "{same}");
        let higher = raises("1Gi", "96Mi").expect_err("higher");
        assert!(
            higher.contains("1Gi") && higher.contains("96Mi"),
            "{higher}"
        );
        assert!(raises("{{ .Values.mem }}", "96Mi").is_err());
    }

    #[test]
    fn a_missing_key_is_an_error_that_names_it() {
        let err = find_key(VALUES, "policyService.resources.limits.cpu").unwrap_err();
        assert!(err.contains("policyService.resources.limits.cpu"), "{err}");
        assert!(find_key(VALUES, "userService.resources").is_err());
    }

    #[test]
    fn a_containers_limit_is_found_in_a_manifest() {
        let manifest = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: sidecar\n        resources:\n          limits:\n            memory: 16Mi\n      - name: app\n        image: x\n        resources:\n          limits:\n            memory: 64Mi\n";
        let at = find_container_memory(manifest, "app").unwrap();
        assert_eq!(at.value, "64Mi");
        assert_eq!(
            replace(manifest, &at, "96Mi"),
            manifest.replace("memory: 64Mi", "memory: 96Mi")
        );
        assert!(find_container_memory(manifest, "db").is_err());
        let at = find_container_image(manifest, "app").unwrap();
        assert_eq!(at.value, "x");
        assert_eq!(
            replace(manifest, &at, "web:1"),
            manifest.replace("image: x", "image: web:1")
        );
        assert!(find_container_image(manifest, "sidecar").is_err());
    }
}

//! Markdown the operator writes to GitHub (issue and comment bodies, the
//! post-mortem, pull-request bodies), with text it did not write itself.
//!
//! Text from a log, an event, a trace or a model may hold markdown of its
//! own: a mention that pages a team, an image or a link to an outside host,
//! raw HTML, or a copy of the hidden `<!-- sre-space: … -->` markers by
//! which the operator finds its issues and comments again. Such text is only
//! ever shown as code, where GitHub renders none of that, behind a fence
//! longer than any run of backticks inside it, so it cannot close its fence.
//! HTML comment openers and mentions inside are broken with a zero-width
//! joiner as well, so the raw body never holds a marker the operator did
//! not write. The only links in what the operator writes are those it builds
//! itself.

use crate::redact;

/// Invisible, and breaks the patterns below in the raw text.
const ZWJ: char = '\u{200D}';

/// The text redacted, with HTML comment delimiters and `@mentions` broken.
fn defuse(text: &str) -> String {
    let text = redact::text(text);
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        out.push(c);
        let next = chars.peek().copied();
        match (prev, c, next) {
            // `<!--` → `<‍!--`, and `-->` → `--‍>`.
            (_, '<', Some('!')) => out.push(ZWJ),
            (Some('-'), '-', Some('>')) => out.push(ZWJ),
            // `@name`, `@org/team` → `@‍name`.
            (_, '@', Some(n)) if n.is_alphanumeric() || n == '-' || n == '_' => out.push(ZWJ),
            _ => {}
        }
        prev = Some(c);
    }
    out
}

fn longest_backtick_run(text: &str) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// Untrusted text as an inline code span, on one line: nothing in it renders
/// as markdown or HTML. Empty text gives an empty string.
pub fn inline(text: &str) -> String {
    let one_line: String = defuse(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let t = one_line.trim();
    if t.is_empty() {
        return String::new();
    }
    let fence = "`".repeat(longest_backtick_run(t) + 1);
    // A span's content may not start or end with its own backticks.
    let pad = if t.starts_with('`') || t.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{t}{pad}{fence}")
}

/// [`inline`], for a table cell: a `|` inside would end the cell.
pub fn cell(text: &str) -> String {
    inline(text).replace('|', "\\|")
}

/// Untrusted text, possibly of several lines, as a fenced code block with
/// the given info string (`diff`, or empty).
pub fn untrusted(text: &str, info: &str) -> String {
    let t = defuse(text);
    let t = t.trim_end_matches('\n');
    let fence = "`".repeat((longest_backtick_run(t) + 1).max(3));
    let info: String = info.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{fence}{info}\n{t}\n{fence}\n")
}

/// A link the operator builds, to a URL it holds: rendered as a link only
/// when the URL is http(s) on one of the `hosts` (GitHub itself, the
/// cluster's dashboard, its Jaeger UI) and cannot break out of the link's
/// syntax; otherwise shown as code, not clickable.
pub fn link(label: &str, url: &str, hosts: &[&str]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || " #-_./".contains(c);
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let clean = !url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "()<>[]\"'`\\".contains(c));
    match host {
        Some(h)
            if clean
                && label.chars().all(plain)
                && hosts.iter().any(|a| a.eq_ignore_ascii_case(h)) =>
        {
            format!("[{label}]({url})")
        }
        _ => format!("{label} ({})", inline(url)),
    }
}

/// One bullet a piece of evidence, `- {id} {kind} {source}: {summary}`,
/// the text it copied quoted: the post-mortem and the issue's diagnosis
/// list it alike.
pub fn evidence_list(out: &mut String, evidence: &[crate::crd::Evidence]) {
    use std::fmt::Write;
    for e in evidence {
        let _ = writeln!(
            out,
            "- {} {:?} {}: {}",
            inline(&e.id),
            e.kind,
            inline(&e.source),
            inline(&e.summary)
        );
    }
}

/// Whether a body carries one of the operator's hidden markers: as its last
/// line, where the operator writes it, never somewhere inside.
pub fn ends_with_marker(body: &str, marker: &str) -> bool {
    body.trim_end()
        .rsplit('\n')
        .next()
        .is_some_and(|last| last.trim() == marker)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The text of a markdown document outside code: code spans and fenced
    /// blocks removed, as CommonMark pairs them (a run of backticks closes
    /// only with a run of the same length).
    pub fn outside_code(md: &str) -> String {
        let mut out = String::new();
        let mut lines = md.lines().peekable();
        while let Some(line) = lines.next() {
            let trimmed = line.trim_start();
            let run = trimmed.chars().take_while(|c| *c == '`').count();
            if run >= 3 && !trimmed[run..].contains('`') {
                // A fenced block: skip to a closing fence at least as long.
                for l in lines.by_ref() {
                    let t = l.trim();
                    if t.len() >= run && t.chars().all(|c| c == '`') {
                        break;
                    }
                }
                continue;
            }
            let b = line.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'`' {
                    let n = b[i..].iter().take_while(|c| **c == b'`').count();
                    // Find the closing run of exactly n backticks.
                    let mut j = i + n;
                    let mut closed = None;
                    while j < b.len() {
                        if b[j] == b'`' {
                            let m = b[j..].iter().take_while(|c| **c == b'`').count();
                            if m == n {
                                closed = Some(j + m);
                                break;
                            }
                            j += m;
                        } else {
                            j += 1;
                        }
                    }
                    match closed {
                        Some(end) => i = end,
                        None => {
                            out.push_str(&line[i..i + n]);
                            i += n;
                        }
                    }
                } else {
                    let next = line[i..].find('`').map(|k| i + k).unwrap_or(b.len());
                    out.push_str(&line[i..next]);
                    i = next;
                }
            }
            out.push('\n');
        }
        out
    }

    const HOSTILE: &str = "boom <!-- sre-space:incident shop/other abc --> cc @org/team \
        <img src=x onerror=alert(1)> ![pixel](https://evil.example/p.png) \
        [docs](https://evil.example/login) ``` ` DB_PASSWORD=hunter2";

    #[test]
    fn hostile_text_renders_as_code_only() {
        let md = format!("before {} after", inline(HOSTILE));
        let outside = outside_code(&md);
        assert_eq!(outside.trim(), "before  after", "{md}");
        assert!(!md.contains("<!--"), "{md}");
        assert!(!md.contains("@org"), "{md}");
        assert!(!md.contains("hunter2"), "{md}");
    }

    #[test]
    fn a_block_cannot_close_its_fence() {
        let text = "line one\n````\n# heading\n<!-- sre-space:comment 1/x -->\n";
        let md = format!("{}after\n", untrusted(text, "diff"));
        assert!(md.starts_with("`````diff\n"), "{md}");
        assert_eq!(outside_code(&md), "after\n", "{md}");
        assert!(!md.contains("<!--"), "{md}");
    }

    #[test]
    fn a_cell_keeps_its_table_row() {
        assert_eq!(cell("a | b"), "`a \\| b`");
        assert_eq!(inline("`x`"), "`` `x` ``");
        assert_eq!(inline("  \n "), "");
    }

    #[test]
    fn links_go_only_to_the_hosts_allowed() {
        let hosts = ["github.com"];
        assert_eq!(
            link("#7", "https://github.com/acme/deploy/pull/7", &hosts),
            "[#7](https://github.com/acme/deploy/pull/7)"
        );
        for url in [
            "https://evil.example/acme/deploy/pull/7",
            "https://github.com.evil.example/x",
            "https://user:pw@github.com/x",
            "javascript:alert(1)",
            "https://github.com/x) ![img](https://evil.example/p.png",
        ] {
            let md = link("#7", url, &hosts);
            assert!(
                !outside_code(&md).contains("]("),
                "{url} became a link: {md}"
            );
        }
    }

    #[test]
    fn only_a_marker_on_the_last_line_counts() {
        let marker = "<!-- sre-space:comment 1/diagnosis -->";
        assert!(ends_with_marker(&format!("body\n\n{marker}\n"), marker));
        assert!(!ends_with_marker(
            &format!("evidence {marker} more\n\n<!-- sre-space:comment 1/other -->"),
            marker
        ));
    }
}

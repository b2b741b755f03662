//! Who reviews a change to a file: the repository's CODEOWNERS, read as
//! GitHub reads it. The file is looked for in `.github/`, the root and
//! `docs/`, first found wins; each line is a pattern and its owners; the
//! last line whose pattern matches the path decides (a line with no owners
//! leaves the path without any). Owners are `@user` or `@org/team`; email
//! owners cannot be asked for a review through the API and are left out.

/// Where GitHub looks for the file, in its order.
pub const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

/// Whom to ask for a review.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reviewers {
    /// GitHub logins.
    pub users: Vec<String>,
    /// Team slugs of the repository's organisation (`@org/slug` → `slug`).
    pub teams: Vec<String>,
}

impl Reviewers {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.teams.is_empty()
    }
}

/// Whether `name` matches one glob component (`*` any run, `?` one
/// character; neither crosses a `/`).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

/// Whether the pattern's components match the path's components exactly;
/// `**` matches any number of components.
fn components(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| components(rest, &path[i..])),
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(n, tail)| glob(p.as_bytes(), n.as_bytes()) && components(rest, tail)),
    }
}

/// Whether a CODEOWNERS pattern covers `path` (a file path from the
/// repository's root, no leading `/`).
///
/// As GitHub: a pattern with a `/` at its start or middle is anchored to
/// the root, one without matches at any depth; a pattern matching a
/// directory covers every file under it, except that `dir/*` covers only
/// the files directly in `dir`; a trailing `/` matches directories only.
pub fn matches(pattern: &str, path: &str) -> bool {
    let dir_only = pattern.ends_with('/');
    let trimmed = pattern.trim_end_matches('/');
    let anchored = trimmed.starts_with('/') || trimmed.contains('/');
    let trimmed = trimmed.trim_start_matches('/');
    if trimmed.is_empty() {
        return false;
    }
    let pat: Vec<&str> = trimmed.split('/').collect();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let shallow = pattern.ends_with("/*");
    let starts: Vec<usize> = if anchored {
        vec![0]
    } else {
        (0..parts.len()).collect()
    };
    starts.into_iter().any(|start| {
        (start + 1..=parts.len()).any(|end| {
            let is_file = end == parts.len();
            if (dir_only && is_file) || (shallow && !is_file) {
                return false;
            }
            components(&pat, &parts[start..end])
        })
    })
}

/// The owners of `path` under this CODEOWNERS text.
pub fn owners(codeowners: &str, path: &str) -> Reviewers {
    let mut found = None;
    for line in codeowners.lines() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(pattern) = words.next() else {
            continue;
        };
        if matches(pattern, path) {
            found = Some(words.map(str::to_string).collect::<Vec<_>>());
        }
    }
    let mut out = Reviewers::default();
    for owner in found.unwrap_or_default() {
        let Some(name) = owner.strip_prefix('@') else {
            continue;
        };
        match name.split_once('/') {
            Some((_, team)) if !team.is_empty() => push_new(&mut out.teams, team),
            Some(_) => {}
            None if !name.is_empty() => push_new(&mut out.users, name),
            None => {}
        }
    }
    out
}

fn push_new(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        list.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODEOWNERS: &str = "\
# Everything: the platform team
*       @acme/platform
*.md    @docs-writer   # prose
/apps/  @acme/apps @lead
apps/shop/values.yaml @shop-owner @acme/shop
docs/*  @docs-writer
/apps/legacy/
**/secrets/** @acme/security
";

    fn users(r: &Reviewers) -> Vec<&str> {
        r.users.iter().map(String::as_str).collect()
    }
    fn teams(r: &Reviewers) -> Vec<&str> {
        r.teams.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_last_matching_line_decides_who_reviews() {
        let shop = owners(CODEOWNERS, "apps/shop/values.yaml");
        assert_eq!(users(&shop), ["shop-owner"]);
        assert_eq!(teams(&shop), ["shop"]);
        let other = owners(CODEOWNERS, "apps/cart/values.yaml");
        assert_eq!((users(&other), teams(&other)), (vec!["lead"], vec!["apps"]));
        let anything = owners(CODEOWNERS, "infra/main.tf");
        assert_eq!(teams(&anything), ["platform"]);
        assert!(anything.users.is_empty());
    }

    #[test]
    fn a_line_without_owners_leaves_its_files_unowned() {
        assert!(owners(CODEOWNERS, "apps/legacy/deploy.yaml").is_empty());
        assert!(owners("", "apps/shop/values.yaml").is_empty());
    }

    #[test]
    fn patterns_match_as_github_reads_them() {
        // No slash: any depth, by name.
        assert!(matches("*.md", "README.md"));
        assert!(matches("*.md", "docs/a/b.md"));
        assert!(matches("values.yaml", "apps/shop/values.yaml"));
        // A directory, anywhere or from the root.
        assert!(matches("apps/", "x/apps/y.yaml"));
        assert!(matches("/apps/", "apps/shop/values.yaml"));
        assert!(!matches("/apps/", "x/apps/y.yaml"));
        assert!(!matches("apps/", "apps"), "a trailing slash is a directory");
        // A middle slash anchors; a directory pattern covers what is under it.
        assert!(matches("apps/shop", "apps/shop/values.yaml"));
        assert!(!matches("apps/shop", "x/apps/shop/values.yaml"));
        // dir/* covers only the directory's own files.
        assert!(matches("docs/*", "docs/intro.md"));
        assert!(!matches("docs/*", "docs/guide/intro.md"));
        // ** spans directories.
        assert!(matches("**/secrets/**", "apps/shop/secrets/db.yaml"));
        assert!(matches("/apps/**/values.yaml", "apps/values.yaml"));
        assert!(matches("/apps/**/values.yaml", "apps/a/b/values.yaml"));
        assert!(matches("app?.yaml", "apps.yaml"));
        assert!(!matches("app?.yaml", "app.yaml"));
    }

    #[test]
    fn users_and_teams_are_told_apart_and_emails_left_out() {
        let r = owners(
            "*.yaml @Alice @acme/sre ops@example.com @alice @acme/sre\n",
            "values.yaml",
        );
        assert_eq!(users(&r), ["Alice"]);
        assert_eq!(teams(&r), ["sre"]);
    }
}

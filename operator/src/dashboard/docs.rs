//! The API's reference page at `/docs`, rendered by the operator from its
//! OpenAPI document: every path and method, its parameters, its responses
//! and their schemas, and a curl example. Plain HTML with an inline style
//! allowed by hash; no script, nothing loaded from elsewhere.

use std::fmt::Write;

use base64::Engine;
use sha2::{Digest, Sha256};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr, Required};

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#1d2330}h2{margin-top:2.5rem;border-bottom:1px solid #ccd}\
h3{font-family:monospace;background:#f3f4f8;padding:.4rem .6rem;border-radius:4px}\
.m{color:#fff;background:#2f6f4f;padding:0 .4rem;border-radius:3px;margin-right:.5rem}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #dde;padding:.2rem .5rem;\
text-align:left;vertical-align:top}pre{background:#f3f4f8;padding:.6rem;overflow-x:auto}\
code{font-family:monospace}";

/// Text safe in HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A schema in a line: a link to a named one, or its JSON.
fn schema_ref<T: serde::Serialize>(schema: &RefOr<T>) -> String {
    match schema {
        RefOr::Ref(r) => {
            let name = r.ref_location.rsplit('/').next().unwrap_or_default();
            format!("<a href=\"#schema-{0}\"><code>{0}</code></a>", escape(name))
        }
        RefOr::T(t) => format!(
            "<code>{}</code>",
            escape(&serde_json::to_string(t).unwrap_or_default())
        ),
    }
}

/// The example path: path parameters as shell variables, the required
/// query parameters with a placeholder.
fn example(path: &str, op: &Operation) -> String {
    let mut url = path.replace('{', "${").to_string();
    let required: Vec<String> = op
        .parameters
        .iter()
        .flatten()
        .filter(|p| {
            matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                && matches!(p.required, Required::True)
        })
        .map(|p| format!("{}=...", p.name))
        .collect();
    if path == "/api/v1/search" {
        url.push_str("?q=oomkilled+memory+limit&limit=5");
    } else if path == "/api/v1/incidents" {
        url.push_str("?fingerprint=$FINGERPRINT");
    } else if !required.is_empty() {
        url.push('?');
        url.push_str(&required.join("&"));
    }
    format!("curl -H \"Authorization: Bearer $SRE_SPACE_DASHBOARD_TOKEN\" \"$DASHBOARD{url}\"")
}

fn operation(out: &mut String, path: &str, method: &str, op: &Operation) {
    let _ = write!(
        out,
        "<h3 id=\"{}\"><span class=\"m\">{method}</span>{}</h3>",
        escape(&format!("{method} {path}")),
        escape(path)
    );
    if let Some(s) = &op.summary {
        let _ = write!(out, "<p>{}</p>", escape(s));
    }
    if let Some(d) = op
        .description
        .as_ref()
        .filter(|d| Some(*d) != op.summary.as_ref())
    {
        let _ = write!(out, "<p>{}</p>", escape(d));
    }
    let params: Vec<_> = op.parameters.iter().flatten().collect();
    if !params.is_empty() {
        out.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th>\
             <th>description</th></tr>",
        );
        for p in params {
            let location = serde_json::to_value(&p.parameter_in)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.name),
                escape(&location),
                if matches!(p.required, Required::True) {
                    "yes"
                } else {
                    "no"
                },
                p.schema.as_ref().map(schema_ref).unwrap_or_default(),
                escape(p.description.as_deref().unwrap_or_default())
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<table><tr><th>status</th><th>description</th><th>body</th></tr>");
    for (status, response) in &op.responses.responses {
        let (description, body) = match response {
            RefOr::T(r) => (
                r.description.clone(),
                r.content
                    .iter()
                    .map(|(kind, c)| {
                        let schema = c.schema.as_ref().map(schema_ref).unwrap_or_default();
                        format!("<code>{}</code> {schema}", escape(kind))
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ),
            RefOr::Ref(r) => (r.ref_location.clone(), String::new()),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{body}</td></tr>",
            escape(status),
            escape(&description)
        );
    }
    out.push_str("</table>");
    let _ = write!(out, "<pre>{}</pre>", escape(&example(path, op)));
}

/// The page, and the Content-Security-Policy that lets exactly its style
/// apply.
pub fn render(doc: &OpenApi) -> (String, String) {
    let mut out = String::new();
    let title = escape(&doc.info.title);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title} <small>{}</small></h1>",
        escape(&doc.info.version)
    );
    if let Some(d) = &doc.info.description {
        let _ = write!(out, "<p>{}</p>", escape(d));
    }
    out.push_str(
        "<p>Every request needs the dashboard's token when one is set: \
         <code>Authorization: Bearer &lt;token&gt;</code> (or <code>?token=&lt;token&gt;</code>). \
         In the examples, <code>$DASHBOARD</code> is the dashboard's address, for example \
         <code>http://127.0.0.1:3001</code> through <code>kubectl port-forward</code>. \
         The machine-readable document is <a href=\"/api/v1/openapi.json\">\
         /api/v1/openapi.json</a> (OpenAPI 3).</p><h2>Paths</h2><ul>",
    );
    let methods = |item: &utoipa::openapi::PathItem| -> Vec<(&'static str, Operation)> {
        [
            ("GET", item.get.clone()),
            ("POST", item.post.clone()),
            ("PUT", item.put.clone()),
            ("DELETE", item.delete.clone()),
            ("PATCH", item.patch.clone()),
            ("HEAD", item.head.clone()),
        ]
        .into_iter()
        .filter_map(|(m, op)| op.map(|op| (m, op)))
        .collect()
    };
    for (path, item) in &doc.paths.paths {
        for (method, op) in methods(item) {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><code>{method} {}</code></a> {}</li>",
                escape(&format!("{method} {path}")),
                escape(path),
                escape(op.summary.as_deref().unwrap_or_default())
            );
        }
    }
    out.push_str("</ul>");
    for (path, item) in &doc.paths.paths {
        for (method, op) in methods(item) {
            operation(&mut out, path, method, &op);
        }
    }
    if let Some(components) = &doc.components {
        out.push_str("<h2>Schemas</h2>");
        for (name, schema) in &components.schemas {
            let _ = write!(
                out,
                "<h3 id=\"schema-{0}\">{0}</h3><pre>{1}</pre>",
                escape(name),
                escape(&serde_json::to_string_pretty(schema).unwrap_or_default())
            );
        }
    }
    out.push_str("</body></html>");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    (out, csp)
}

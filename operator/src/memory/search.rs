//! Text search over the history: BM25 over the words of root causes,
//! evidence and post-mortems, optionally blended with the cosine similarity
//! of embeddings. Pure: the caller gathers the documents (current Incidents,
//! IncidentMemories) and, where a model is configured, their vectors.

use std::collections::{BTreeMap, BTreeSet};

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalisation.
const B: f64 = 0.75;
/// Tokens shorter than this are noise ("a", "to", ids' fragments).
const MIN_TOKEN_CHARS: usize = 2;
/// Tokens longer than this are hashes and blobs, not words.
const MAX_TOKEN_CHARS: usize = 64;
/// The characters of text a snippet shows.
pub const SNIPPET_CHARS: usize = 200;
/// The weight of the embeddings' cosine similarity in a blended score; BM25
/// (normalised to the best match) has the rest.
pub const EMBEDDING_WEIGHT: f64 = 0.5;
/// With embeddings, a document no query word matches is still a result when
/// its cosine similarity reaches this.
pub const MIN_COSINE: f64 = 0.5;

/// English words too common to tell documents apart, and words every
/// incident says.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "has", "have",
    "in", "into", "is", "it", "its", "no", "not", "of", "on", "or", "so", "that", "the", "their",
    "then", "there", "this", "to", "was", "were", "which", "while", "with",
];

/// The words of a text: lowercase, split on anything not a letter or digit,
/// without stop words and very short or very long tokens.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| {
            let n = t.chars().count();
            (MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&n)
        })
        .map(str::to_lowercase)
        .filter(|t| !STOP_WORDS.contains(&t.as_str()))
        .collect()
}

/// One searchable thing: named fields of text (a root cause, an evidence
/// line, a post-mortem).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub fields: Vec<(String, String)>,
}

impl Document {
    /// All its text, in field order, for an embedding.
    pub fn text(&self) -> String {
        self.fields
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A scored document: its position in what was indexed, its score, and the
/// field and words that matched best.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub doc: usize,
    pub score: f64,
    pub bm25: f64,
    pub cosine: Option<f64>,
    pub field: String,
    pub snippet: String,
}

/// The term statistics of a set of documents.
pub struct Index<'a> {
    docs: &'a [Document],
    /// Each document's term counts and length in tokens.
    terms: Vec<(BTreeMap<String, u32>, usize)>,
    /// In how many documents each term appears.
    df: BTreeMap<String, usize>,
    avg_len: f64,
}

impl<'a> Index<'a> {
    pub fn build(docs: &'a [Document]) -> Self {
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        let terms: Vec<(BTreeMap<String, u32>, usize)> = docs
            .iter()
            .map(|d| {
                let mut tf: BTreeMap<String, u32> = BTreeMap::new();
                let mut len = 0usize;
                for (_, text) in &d.fields {
                    for t in tokenize(text) {
                        len = len.saturating_add(1);
                        let n = tf.entry(t).or_default();
                        *n = n.saturating_add(1);
                    }
                }
                for t in tf.keys() {
                    *df.entry(t.clone()).or_default() += 1;
                }
                (tf, len)
            })
            .collect();
        let total: usize = terms.iter().map(|(_, l)| *l).fold(0, usize::saturating_add);
        let avg_len = if docs.is_empty() {
            0.0
        } else {
            total as f64 / docs.len() as f64
        };
        Self {
            docs,
            terms,
            df,
            avg_len,
        }
    }

    /// A term's inverse document frequency (BM25's, kept positive): a rare
    /// term weighs more than a common one.
    fn idf(&self, term: &str) -> f64 {
        let n = self.docs.len() as f64;
        let df = self.df.get(term).copied().unwrap_or(0) as f64;
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// Each document's BM25 score for the query, in document order.
    pub fn bm25(&self, query: &str) -> Vec<f64> {
        let q: BTreeSet<String> = tokenize(query).into_iter().collect();
        self.terms
            .iter()
            .map(|(tf, len)| {
                let norm = if self.avg_len > 0.0 {
                    1.0 - B + B * (*len as f64) / self.avg_len
                } else {
                    1.0
                };
                q.iter()
                    .filter_map(|t| tf.get(t).map(|f| (t, f64::from(*f))))
                    .map(|(t, f)| self.idf(t) * f * (K1 + 1.0) / (f + K1 * norm))
                    .sum()
            })
            .collect()
    }

    /// The documents matching the query, best first, at most `limit`.
    /// `cosines`, when given (one per document), blends the embeddings'
    /// similarity in (see [`blend`]).
    pub fn search(&self, query: &str, cosines: Option<&[f64]>, limit: usize) -> Vec<Hit> {
        let bm25 = self.bm25(query);
        let scores = blend(&bm25, cosines);
        let words: BTreeSet<String> = tokenize(query).into_iter().collect();
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .enumerate()
            .filter_map(|(i, score)| {
                let score = score?;
                let (field, snippet) = snippet(&self.docs[i], &words);
                Some(Hit {
                    doc: i,
                    score,
                    bm25: bm25[i],
                    cosine: cosines.and_then(|c| c.get(i).copied()),
                    field,
                    snippet,
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        hits.truncate(limit);
        hits
    }
}

/// The final scores, one per document, None where the document is no
/// result. BM25 alone without `cosines`; with them, BM25 normalised to the
/// best match and the cosine similarity, weighted by [`EMBEDDING_WEIGHT`].
pub fn blend(bm25: &[f64], cosines: Option<&[f64]>) -> Vec<Option<f64>> {
    let Some(cosines) = cosines else {
        return bm25
            .iter()
            .map(|s| (*s > 0.0 && s.is_finite()).then_some(*s))
            .collect();
    };
    let best = bm25.iter().copied().fold(0.0_f64, f64::max);
    bm25.iter()
        .enumerate()
        .map(|(i, s)| {
            let lexical = if best > 0.0 { s / best } else { 0.0 };
            let cosine = cosines
                .get(i)
                .copied()
                .filter(|c| c.is_finite())
                .unwrap_or(0.0)
                .max(0.0);
            let matched = *s > 0.0 || cosine >= MIN_COSINE;
            let score = (1.0 - EMBEDDING_WEIGHT) * lexical + EMBEDDING_WEIGHT * cosine;
            (matched && score.is_finite()).then_some(score)
        })
        .collect()
}

/// The cosine similarity of two vectors; 0 when either is empty or zero or
/// their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let norm = na.sqrt() * nb.sqrt();
    if norm > 0.0 && norm.is_finite() {
        dot / norm
    } else {
        0.0
    }
}

/// The field with the most query words, and up to [`SNIPPET_CHARS`] of it
/// around the first of them; the first field's start when none matches.
pub fn snippet(doc: &Document, words: &BTreeSet<String>) -> (String, String) {
    let matches = |text: &str| {
        tokenize(text)
            .into_iter()
            .collect::<BTreeSet<_>>()
            .intersection(words)
            .count()
    };
    let best = doc
        .fields
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, text))| (matches(text), std::cmp::Reverse(*i)));
    let Some((_, (field, text))) = best else {
        return (String::new(), String::new());
    };
    let chars: Vec<char> = text.chars().collect();
    let lower: String = text.to_lowercase();
    // The first matched word's position, in characters.
    let at = words
        .iter()
        .filter_map(|w| lower.find(w.as_str()))
        .min()
        .map(|byte| lower[..byte].chars().count())
        .unwrap_or(0);
    let start = at.saturating_sub(SNIPPET_CHARS / 4);
    let end = start.saturating_add(SNIPPET_CHARS).min(chars.len());
    let start = end.saturating_sub(SNIPPET_CHARS).min(start);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.extend(&chars[start..end]);
    if end < chars.len() {
        out.push('…');
    }
    (
        field.clone(),
        out.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(fields: &[(&str, &str)]) -> Document {
        Document {
            fields: fields
                .iter()
                .map(|(f, t)| (f.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn history() -> Vec<Document> {
        vec![
            doc(&[
                (
                    "rootCause",
                    "CrashLoop: the container exits with code 1 at start: missing config file /etc/app.yaml",
                ),
                (
                    "evidence",
                    "container app restarted 12 times, back-off restarting failed container",
                ),
            ]),
            doc(&[
                (
                    "rootCause",
                    "OutOfMemory: container app was OOMKilled: its memory limit 64Mi is below the working set",
                ),
                (
                    "evidence",
                    "container app terminated with reason OOMKilled, exit code 137",
                ),
                (
                    "postMortem",
                    "Raised the memory limit to 96Mi through a pull request; it held.",
                ),
            ]),
            doc(&[
                (
                    "rootCause",
                    "BadRollout: the new image fails its readiness probe",
                ),
                (
                    "evidence",
                    "rollout of quote-7f9c made the error rate rise; the previous ReplicaSet was healthy",
                ),
            ]),
        ]
    }

    #[test]
    fn the_oom_incident_ranks_first_for_oomkilled_memory_limit() {
        let docs = history();
        let hits = Index::build(&docs).search("oomkilled memory limit", None, 10);
        assert_eq!(hits.first().map(|h| h.doc), Some(1), "{hits:?}");
        assert!(
            hits.iter().all(|h| h.doc != 2),
            "the rollout shares no word with the query: {hits:?}"
        );
        assert!(
            hits[0].snippet.to_lowercase().contains("oomkilled"),
            "{hits:?}"
        );
    }

    #[test]
    fn a_rare_term_outweighs_a_common_one() {
        // "container" is in every document; "probe" only in one.
        let docs = history();
        let index = Index::build(&docs);
        let hits = index.search("container probe", None, 10);
        assert_eq!(hits.first().map(|h| h.doc), Some(2), "{hits:?}");
        assert!(index.idf("probe") > index.idf("container"));
    }

    #[test]
    fn a_query_nothing_matches_finds_nothing() {
        let docs = history();
        assert!(
            Index::build(&docs)
                .search("kafka partition lag", None, 10)
                .is_empty()
        );
        assert!(
            Index::build(&docs).search("the of a", None, 10).is_empty(),
            "stop words only"
        );
        assert!(
            Index::build(&[]).search("oomkilled", None, 10).is_empty(),
            "no documents"
        );
    }

    #[test]
    fn the_tokenizer_lowercases_splits_and_drops_stop_words_and_short_tokens() {
        assert_eq!(
            tokenize("The pod OOMKilled: exit-code=137, a limit of 64Mi"),
            ["pod", "oomkilled", "exit", "code", "137", "limit", "64mi"]
        );
        assert!(
            tokenize(&"x".repeat(100)).is_empty(),
            "a blob is not a word"
        );
    }

    #[test]
    fn the_limit_bounds_the_results() {
        let docs = history();
        assert_eq!(Index::build(&docs).search("container", None, 2).len(), 2);
    }

    #[test]
    fn embeddings_can_find_a_document_that_shares_no_word_with_the_query() {
        let docs = history();
        let index = Index::build(&docs);
        // The model says the query means the crash loop.
        let cosines = [0.9, 0.1, 0.2];
        let hits = index.search("application keeps dying on boot", Some(&cosines), 10);
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), [0]);
        // And it reorders lexical matches: the OOM one matches "container"
        // as well as the crash loop does, the cosine decides.
        let cosines = [0.1, 0.95, 0.0];
        let hits = index.search("container", Some(&cosines), 10);
        assert_eq!(hits.first().map(|h| h.doc), Some(1), "{hits:?}");
    }

    #[test]
    fn cosine_of_mismatched_or_zero_vectors_is_zero() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_snippet_is_bounded_and_centred_on_a_matching_word() {
        let long = format!(
            "{} OOMKilled {}",
            "lorem ".repeat(100),
            "ipsum ".repeat(100)
        );
        let d = doc(&[("rootCause", "nothing here"), ("evidence", &long)]);
        let words = ["oomkilled".to_string()].into_iter().collect();
        let (field, s) = snippet(&d, &words);
        assert_eq!(field, "evidence");
        assert!(s.contains("OOMKilled"), "{s}");
        assert!(s.chars().count() <= SNIPPET_CHARS + 2, "{}", s.len());
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
    }
}

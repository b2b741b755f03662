//! The knowledge base's search: the documents of the history (current
//! Incidents and IncidentMemories), ranked by BM25 and, when an embeddings
//! model is configured, by a blend with the embeddings' cosine similarity.
//! Embeddings are cached by the hash of the text they embed, so a document
//! is embedded once until its text changes; a failing model degrades the
//! answer to BM25 and the answer says so.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::search::{self, Document, Hit, Index};
use crate::crd::{Incident, IncidentMemory};
use crate::llm::embeddings::Embedder;

/// Embeddings kept in memory; the oldest are dropped beyond it.
pub const MAX_CACHED_EMBEDDINGS: usize = 2048;
/// Documents embedded for one query at most; the rest are ranked by BM25
/// alone until a later query embeds them.
pub const MAX_EMBEDDED_PER_QUERY: usize = 256;

/// How an answer was ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Ranking {
    #[serde(rename = "bm25")]
    Bm25,
    #[serde(rename = "bm25+embeddings")]
    Bm25Embeddings,
}

impl Ranking {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bm25 => "bm25",
            Self::Bm25Embeddings => "bm25+embeddings",
        }
    }
}

/// A ranked answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub ranking: Ranking,
    /// Why the ranking is not what was configured, when it is not.
    pub note: Option<String>,
    pub hits: Vec<Hit>,
}

/// The search, with its embeddings model (if any) and their cache.
#[derive(Default)]
pub struct Knowledge {
    embedder: Option<Arc<dyn Embedder>>,
    cache: Mutex<EmbeddingCache>,
}

impl Knowledge {
    pub fn new(embedder: Option<Arc<dyn Embedder>>) -> Self {
        Self {
            embedder,
            cache: Mutex::default(),
        }
    }

    /// The documents matching `query`, best first, at most `limit`.
    pub async fn search(&self, docs: &[Document], query: &str, limit: usize) -> Answer {
        let index = Index::build(docs);
        let Some(embedder) = &self.embedder else {
            return Answer {
                ranking: Ranking::Bm25,
                note: None,
                hits: index.search(query, None, limit),
            };
        };
        match self.cosines(embedder.as_ref(), docs, query).await {
            Ok(cosines) => Answer {
                ranking: Ranking::Bm25Embeddings,
                note: None,
                hits: index.search(query, Some(&cosines), limit),
            },
            Err(e) => {
                tracing::warn!(error = %e, "knowledge base: embeddings failed; ranking by BM25 alone");
                Answer {
                    ranking: Ranking::Bm25,
                    note: Some(crate::redact::string(&format!(
                        "the embeddings model failed ({e}); ranked by BM25 alone"
                    ))),
                    hits: index.search(query, None, limit),
                }
            }
        }
    }

    /// The cosine similarity of the query to each document; documents not
    /// yet embedded (beyond this query's share) count 0.
    async fn cosines(
        &self,
        embedder: &dyn Embedder,
        docs: &[Document],
        query: &str,
    ) -> std::result::Result<Vec<f64>, crate::llm::ModelFailure> {
        let texts: Vec<String> = docs.iter().map(Document::text).collect();
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| key(t)).collect();
        // The query first, then the documents the cache lacks.
        let mut wanted: Vec<String> = vec![query.to_string()];
        let mut wanted_keys: Vec<[u8; 32]> = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (t, k) in texts.iter().zip(&keys) {
                if wanted_keys.len() >= MAX_EMBEDDED_PER_QUERY {
                    break;
                }
                if !cache.map.contains_key(k) && !wanted_keys.contains(k) {
                    wanted.push(t.clone());
                    wanted_keys.push(*k);
                }
            }
        }
        let mut vectors = embedder.embed(&wanted).await?.into_iter();
        let q = vectors.next().unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in wanted_keys.into_iter().zip(vectors) {
            cache.insert(k, v);
        }
        Ok(keys
            .iter()
            .map(|k| {
                cache
                    .map
                    .get(k)
                    .map(|v| search::cosine(&q, v))
                    .unwrap_or(0.0)
            })
            .collect())
    }

    /// How many embeddings are cached.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

fn key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Embeddings by the hash of their text, the oldest dropped first.
#[derive(Default)]
struct EmbeddingCache {
    map: BTreeMap<[u8; 32], Vec<f32>>,
    order: VecDeque<[u8; 32]>,
}

impl EmbeddingCache {
    fn insert(&mut self, k: [u8; 32], v: Vec<f32>) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > MAX_CACHED_EMBEDDINGS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

fn push(fields: &mut Vec<(String, String)>, field: &str, text: &str) {
    let text = crate::redact::string(text);
    if !text.trim().is_empty() {
        fields.push((field.to_string(), text));
    }
}

/// An Incident's searchable text: its root cause, hypotheses, evidence and
/// post-mortem (all redacted where they were gathered, and again here).
pub fn incident_document(inc: &Incident) -> Document {
    let mut fields = Vec::new();
    let status = inc.status.clone().unwrap_or_default();
    if let Some(d) = &status.diagnosis {
        push(
            &mut fields,
            "rootCause",
            &format!("{:?}: {}", d.category, d.root_cause),
        );
        for h in &d.hypotheses {
            push(&mut fields, "hypothesis", &h.statement);
        }
        for e in &d.evidence {
            push(&mut fields, "evidence", &e.summary);
        }
    }
    if let Some(pm) = &status.post_mortem {
        push(&mut fields, "postMortem", pm);
    }
    if fields.is_empty()
        && let Some(s) = &status.last_signal
    {
        push(
            &mut fields,
            "signal",
            &format!("{}: {}", s.reason, s.message),
        );
    }
    Document { fields }
}

/// An IncidentMemory's searchable text: the summary of each occurrence
/// (category and root cause), newest first, and its keywords.
pub fn memory_document(m: &IncidentMemory) -> Document {
    let mut fields = Vec::new();
    for o in m.spec.occurrences.iter().rev() {
        if let Some(s) = &o.summary {
            push(&mut fields, "summary", s);
        }
    }
    if !m.spec.keywords.is_empty() {
        push(&mut fields, "keywords", &m.spec.keywords.join(" "));
    }
    Document { fields }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::llm::embeddings::HashedEmbeddings;

    fn doc(text: &str) -> Document {
        Document {
            fields: vec![("rootCause".into(), text.into())],
        }
    }

    fn docs() -> Vec<Document> {
        vec![
            doc("CrashLoop: missing config file, the container exits at start"),
            doc("OutOfMemory: the container was OOMKilled at its memory limit"),
        ]
    }

    #[tokio::test]
    async fn without_a_model_the_answer_says_bm25() {
        let answer = Knowledge::default().search(&docs(), "oomkilled", 10).await;
        assert_eq!(answer.ranking, Ranking::Bm25);
        assert_eq!(answer.note, None);
        assert_eq!(answer.hits.first().map(|h| h.doc), Some(1));
    }

    #[tokio::test]
    async fn with_a_model_the_answer_blends_and_embeds_each_text_once() {
        let model = Arc::new(HashedEmbeddings::default());
        let kb = Knowledge::new(Some(model.clone()));
        let answer = kb.search(&docs(), "oomkilled memory limit", 10).await;
        assert_eq!(answer.ranking, Ranking::Bm25Embeddings);
        assert_eq!(answer.hits.first().map(|h| h.doc), Some(1), "{answer:?}");
        assert!(answer.hits[0].cosine.is_some_and(|c| c > 0.0));
        kb.search(&docs(), "config file", 10).await;
        let requests = model.requests.lock().expect("lock").clone();
        assert_eq!(requests[0].len(), 3, "the query and both documents");
        assert_eq!(requests[1], ["config file"], "the documents were cached");
        assert_eq!(kb.cached(), 2);
    }

    #[tokio::test]
    async fn a_failing_model_degrades_to_bm25_and_says_so() {
        let model = Arc::new(HashedEmbeddings::default());
        model.failing.store(true, Ordering::SeqCst);
        let kb = Knowledge::new(Some(model.clone()));
        let answer = kb.search(&docs(), "oomkilled", 10).await;
        assert_eq!(answer.ranking, Ranking::Bm25);
        assert!(
            answer.note.as_deref().is_some_and(|n| n.contains("BM25")),
            "{answer:?}"
        );
        assert_eq!(answer.hits.first().map(|h| h.doc), Some(1));
        model.failing.store(false, Ordering::SeqCst);
        let answer = kb.search(&docs(), "oomkilled", 10).await;
        assert_eq!(answer.ranking, Ranking::Bm25Embeddings, "it recovers");
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = EmbeddingCache::default();
        for i in 0..MAX_CACHED_EMBEDDINGS + 10 {
            cache.insert(key(&i.to_string()), vec![1.0]);
        }
        assert_eq!(cache.map.len(), MAX_CACHED_EMBEDDINGS);
        assert!(!cache.map.contains_key(&key("0")), "the oldest went first");
    }
}

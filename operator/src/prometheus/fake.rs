//! A stand-in for Prometheus in the operator's own tests: it answers each
//! query with what the test set for it, and can refuse a query or be away,
//! as the real server does. It records the queries it was asked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;

use super::{MetricError, MetricStore, QueryFuture, Sample};

/// What the fake answers to one query.
#[derive(Clone, Debug)]
enum Answer {
    Samples(Vec<Sample>),
    /// `status: error`, as for a query that does not parse.
    Refused {
        error_type: String,
        message: String,
    },
}

#[derive(Debug, Default)]
struct State {
    answers: BTreeMap<String, Answer>,
    /// Every query asked, with its instant.
    asked: Vec<(String, Timestamp)>,
    unreachable: bool,
}

/// A Prometheus whose answers a test sets. A query it has no answer for
/// gives an empty vector, as a real server does for a series that does not
/// exist. Cheap to clone; the clones share their state.
#[derive(Clone, Debug, Default)]
pub struct FakePrometheus {
    state: Arc<Mutex<State>>,
}

impl FakePrometheus {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on `promql` gives these series (labels, value).
    pub fn answer<'a>(
        &self,
        promql: &str,
        series: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], f64)>,
    ) {
        let samples = series
            .into_iter()
            .map(|(labels, value)| Sample {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value,
            })
            .collect();
        self.state()
            .answers
            .insert(promql.to_string(), Answer::Samples(samples));
    }

    /// From now on `promql` is refused with `errorType` `error_type`.
    pub fn refuse(&self, promql: &str, error_type: &str, message: &str) {
        self.state().answers.insert(
            promql.to_string(),
            Answer::Refused {
                error_type: error_type.into(),
                message: message.into(),
            },
        );
    }

    /// Takes the server away (true) or brings it back (false).
    pub fn set_unreachable(&self, away: bool) {
        self.state().unreachable = away;
    }

    /// The queries asked so far, oldest first.
    pub fn asked(&self) -> Vec<(String, Timestamp)> {
        self.state().asked.clone()
    }
}

impl MetricStore for FakePrometheus {
    fn query<'a>(&'a self, promql: &'a str, at: Timestamp) -> QueryFuture<'a> {
        let answer = {
            let mut s = self.state();
            s.asked.push((promql.to_string(), at));
            if s.unreachable {
                Err(MetricError::Unreachable {
                    url: "http://prometheus.test:9090".into(),
                    reason: "connection refused".into(),
                })
            } else {
                match s.answers.get(promql).cloned() {
                    None => Ok(vec![]),
                    Some(Answer::Samples(v)) => Ok(v),
                    Some(Answer::Refused {
                        error_type,
                        message,
                    }) => Err(MetricError::Query {
                        error_type,
                        message,
                    }),
                }
            }
        };
        Box::pin(async move { answer })
    }

    fn graph_link(&self, promql: &str) -> String {
        super::graph_link("http://prometheus.test:9090", promql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_answers_what_was_set_refuses_and_goes_away() {
        let p = FakePrometheus::default();
        let at = Timestamp::from_second(100).expect("time");
        assert_eq!(p.query("up", at).await.expect("answers"), vec![]);
        p.answer("up", [(&[("namespace", "shop")][..], 1.0)]);
        let got = p.query("up", at).await.expect("answers");
        assert_eq!(got[0].labels["namespace"], "shop");
        assert_eq!(got[0].value, 1.0);
        p.refuse("up{", "bad_data", "parse error");
        assert!(matches!(
            p.query("up{", at).await,
            Err(MetricError::Query { .. })
        ));
        p.set_unreachable(true);
        assert!(matches!(
            p.query("up", at).await,
            Err(MetricError::Unreachable { .. })
        ));
        p.set_unreachable(false);
        assert!(p.query("up", at).await.is_ok());
        assert_eq!(p.asked().len(), 5);
    }
}

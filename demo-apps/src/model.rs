//! The payloads the services exchange and the events they publish: JSON
//! with ids and RFC 3339 timestamps.

use serde::{Deserialize, Serialize};

/// What a customer insures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Car,
    Home,
    Travel,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Car, Product::Home, Product::Travel];

    /// The yearly base premium, in cents.
    fn base_cents(self) -> u64 {
        match self {
            Product::Car => 48_000,
            Product::Home => 26_000,
            Product::Travel => 6_500,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub age: u32,
    pub country: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eligibility {
    pub user_id: String,
    pub eligible: bool,
    pub reason: String,
    pub checked_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub user_id: String,
    pub product: Product,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub quote_id: String,
    pub user_id: String,
    pub product: Product,
    pub premium_cents: u64,
    pub currency: String,
    pub created_at: String,
}

/// A purchase carries its quote: the demo keeps no state between
/// services, so the price a customer was quoted is the price charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRequest {
    pub quote_id: String,
    pub user_id: String,
    pub premium_cents: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub policy_id: String,
    pub quote_id: String,
    pub user_id: String,
    pub premium_cents: u64,
    pub purchased_at: String,
}

/// The event on the quote topic: a customer asked for a price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequested {
    pub event: String,
    pub event_id: String,
    pub quote_id: String,
    pub user_id: String,
    pub product: Product,
    pub premium_cents: u64,
    pub at: String,
}

/// The event on the purchase topic: a customer bought a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPurchased {
    pub event: String,
    pub event_id: String,
    pub policy_id: String,
    pub quote_id: String,
    pub user_id: String,
    pub premium_cents: u64,
    pub at: String,
}

/// The event on the user topic: user-service decided whether a customer
/// may buy (one per purchase attempt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EligibilityChecked {
    pub event: String,
    pub event_id: String,
    pub user_id: String,
    pub eligible: bool,
    pub reason: String,
    pub at: String,
}

impl EligibilityChecked {
    pub fn of(answer: &Eligibility) -> Self {
        Self {
            event: "eligibility_checked".into(),
            event_id: new_id("evt"),
            user_id: answer.user_id.clone(),
            eligible: answer.eligible,
            reason: answer.reason.clone(),
            at: answer.checked_at.clone(),
        }
    }
}

impl QuoteRequested {
    pub fn of(quote: &Quote) -> Self {
        Self {
            event: "quote_requested".into(),
            event_id: new_id("evt"),
            quote_id: quote.quote_id.clone(),
            user_id: quote.user_id.clone(),
            product: quote.product,
            premium_cents: quote.premium_cents,
            at: now(),
        }
    }
}

impl PolicyPurchased {
    pub fn of(policy: &Policy) -> Self {
        Self {
            event: "policy_purchased".into(),
            event_id: new_id("evt"),
            policy_id: policy.policy_id.clone(),
            quote_id: policy.quote_id.clone(),
            user_id: policy.user_id.clone(),
            premium_cents: policy.premium_cents,
            at: now(),
        }
    }
}

/// A random id with a readable prefix (`q-…`, `pol-…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// Now, in RFC 3339 (UTC, milliseconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Ids come from URLs and bodies: letters, digits, `-` and `_`, 1 to 64.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "{what} must be 1 to 64 characters, got {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{what} may hold letters, digits, - and _, not {c:?}"
        ));
    }
    Ok(())
}

/// A stable pseudo-random number from an id (FNV-1a), so a user's made-up
/// details are the same on every call and every replica.
fn fingerprint(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The user-service's record of a user: derived from the id.
pub fn user(user_id: &str) -> User {
    let f = fingerprint(user_id);
    const COUNTRIES: [&str; 5] = ["FR", "DE", "ES", "IT", "NL"];
    User {
        user_id: user_id.to_owned(),
        name: format!(
            "Customer {}",
            user_id
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        ),
        age: 18 + (f % 62) as u32,
        country: COUNTRIES[((f >> 8) % COUNTRIES.len() as u64) as usize].to_owned(),
    }
}

/// Whether a user may buy: everyone but the accounts marked `blocked-`.
pub fn eligibility(user: &User) -> Eligibility {
    let blocked = user.user_id.starts_with("blocked-");
    Eligibility {
        user_id: user.user_id.clone(),
        eligible: !blocked,
        reason: if blocked {
            "account blocked".into()
        } else {
            "ok".into()
        },
        checked_at: now(),
    }
}

/// The premium for a user and product: young drivers pay more.
pub fn premium_cents(user: &User, product: Product) -> u64 {
    let base = product.base_cents();
    let factor = match user.age {
        0..=24 => 160,
        25..=64 => 100,
        _ => 125,
    };
    base * factor / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_with_ids_and_timestamps() {
        let quote = Quote {
            quote_id: new_id("q"),
            user_id: "u-1".into(),
            product: Product::Car,
            premium_cents: 48_000,
            currency: "EUR".into(),
            created_at: now(),
        };
        let v = serde_json::to_value(QuoteRequested::of(&quote)).expect("json");
        assert_eq!(v["event"], "quote_requested");
        assert_eq!(v["product"], "car");
        assert_eq!(v["quote_id"], quote.quote_id.as_str());
        assert!(
            v["event_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("evt-") && s.len() == 20)
        );
        let at: jiff::Timestamp = v["at"].as_str().expect("at").parse().expect("RFC 3339");
        let age = jiff::Timestamp::now().duration_since(at);
        assert!(age.as_secs() < 5, "{at}");

        let policy = Policy {
            policy_id: new_id("pol"),
            quote_id: quote.quote_id.clone(),
            user_id: "u-1".into(),
            premium_cents: 48_000,
            purchased_at: now(),
        };
        let v = serde_json::to_value(PolicyPurchased::of(&policy)).expect("json");
        assert_eq!(v["event"], "policy_purchased");
        assert_eq!(v["policy_id"], policy.policy_id.as_str());
        assert_eq!(v["premium_cents"], 48_000);
    }

    #[test]
    fn a_quote_request_with_an_unknown_product_is_rejected() {
        let err = serde_json::from_str::<QuoteRequest>(r#"{"user_id":"u-1","product":"boat"}"#)
            .expect_err("boat");
        assert!(err.to_string().contains("boat"), "{err}");
    }

    #[test]
    fn ids_from_outside_are_checked() {
        assert!(check_id("user id", "u-0042").is_ok());
        assert!(check_id("user id", "").is_err());
        assert!(
            check_id("user id", "../etc")
                .expect_err("slash")
                .contains("'.'")
        );
        assert!(check_id("user id", &"x".repeat(65)).is_err());
    }

    #[test]
    fn a_user_is_the_same_on_every_call_and_blocked_ones_may_not_buy() {
        assert_eq!(user("u-7"), user("u-7"));
        assert!((18..80).contains(&user("u-7").age));
        assert!(eligibility(&user("u-7")).eligible);
        let blocked = eligibility(&user("blocked-1"));
        assert!(!blocked.eligible);
        assert_eq!(blocked.reason, "account blocked");
    }

    #[test]
    fn young_customers_pay_more() {
        let mut young = user("u-1");
        young.age = 20;
        let mut adult = young.clone();
        adult.age = 40;
        assert!(premium_cents(&young, Product::Car) > premium_cents(&adult, Product::Car));
        assert_eq!(premium_cents(&adult, Product::Travel), 6_500);
    }
}

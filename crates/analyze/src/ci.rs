//! dive's three CI rules, with dive's names, defaults, value formats and messages.
//!
//! | rule | default | value |
//! |---|---|---|
//! | `lowestEfficiency` | `0.9` | a ratio 0–1; fails when the efficiency is below it |
//! | `highestWastedBytes` | `disabled` | a size (`20MB`, `1.5GiB`, `1000`); fails when more is wasted |
//! | `highestUserWastedPercent` | `0.1` | a ratio 0–1; fails when user waste / user bytes is above it |
//!
//! Any rule is turned off by `disabled`, `off`, `false` or an empty value.

use serde::Serialize;

use crate::Analysis;
use crate::units::parse_bytes;

pub const LOWEST_EFFICIENCY: &str = "lowestEfficiency";
pub const HIGHEST_WASTED_BYTES: &str = "highestWastedBytes";
pub const HIGHEST_USER_WASTED_PERCENT: &str = "highestUserWastedPercent";

pub const DEFAULT_LOWEST_EFFICIENCY: &str = "0.9";
pub const DEFAULT_HIGHEST_WASTED_BYTES: &str = "disabled";
pub const DEFAULT_HIGHEST_USER_WASTED_PERCENT: &str = "0.1";

/// One configured rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    LowestEfficiency(f64),
    HighestWastedBytes(u64),
    HighestUserWastedPercent(f64),
    Disabled(&'static str),
}

/// What a rule said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleResult {
    pub rule: &'static str,
    /// The value it was configured with.
    pub threshold: String,
    pub status: Status,
    /// Why it failed (dive's message), or why it was skipped.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_disabled(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "disabled" | "off" | "false"
    )
}

fn ratio(key: &str, value: &str) -> Result<f64, String> {
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|e| format!("invalid {key} config value, given {value:?}: {e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!(
            "{key} config value is outside allowed range (0-1), given '{v:.6}'"
        ));
    }
    Ok(v)
}

impl Rule {
    pub fn lowest_efficiency(value: &str) -> Result<Rule, String> {
        if is_disabled(value) {
            return Ok(Rule::Disabled(LOWEST_EFFICIENCY));
        }
        ratio(LOWEST_EFFICIENCY, value).map(Rule::LowestEfficiency)
    }

    pub fn highest_wasted_bytes(value: &str) -> Result<Rule, String> {
        if is_disabled(value) {
            return Ok(Rule::Disabled(HIGHEST_WASTED_BYTES));
        }
        parse_bytes(value)
            .map(Rule::HighestWastedBytes)
            .map_err(|e| {
                format!("invalid {HIGHEST_WASTED_BYTES} config value, given {value:?}: {e}")
            })
    }

    pub fn highest_user_wasted_percent(value: &str) -> Result<Rule, String> {
        if is_disabled(value) {
            return Ok(Rule::Disabled(HIGHEST_USER_WASTED_PERCENT));
        }
        ratio(HIGHEST_USER_WASTED_PERCENT, value).map(Rule::HighestUserWastedPercent)
    }

    pub fn key(&self) -> &'static str {
        match self {
            Rule::LowestEfficiency(_) => LOWEST_EFFICIENCY,
            Rule::HighestWastedBytes(_) => HIGHEST_WASTED_BYTES,
            Rule::HighestUserWastedPercent(_) => HIGHEST_USER_WASTED_PERCENT,
            Rule::Disabled(k) => k,
        }
    }

    pub fn evaluate(&self, a: &Analysis) -> RuleResult {
        let (threshold, failure) = match *self {
            Rule::LowestEfficiency(t) => (
                format!("{t}"),
                (t > a.efficiency).then(|| {
                    format!(
                        "image efficiency is too low (efficiency={:.2} < threshold={t})",
                        a.efficiency
                    )
                }),
            ),
            Rule::HighestWastedBytes(t) => (
                format!("{t}"),
                (a.wasted_bytes > t).then(|| {
                    format!(
                        "too many bytes wasted (wasted-bytes={} > threshold={t})",
                        a.wasted_bytes
                    )
                }),
            ),
            Rule::HighestUserWastedPercent(t) => (
                format!("{t}"),
                (a.user_wasted_percent > t).then(|| {
                    format!(
                        "too many bytes wasted, relative to the user bytes added (%-user-wasted-bytes={:.2} > threshold={t})",
                        a.user_wasted_percent
                    )
                }),
            ),
            Rule::Disabled(key) => {
                return RuleResult {
                    rule: key,
                    threshold: "disabled".to_string(),
                    status: Status::Skip,
                    message: "rule disabled".to_string(),
                };
            }
        };
        RuleResult {
            rule: self.key(),
            threshold,
            status: if failure.is_some() {
                Status::Fail
            } else {
                Status::Pass
            },
            message: failure.unwrap_or_default(),
        }
    }
}

/// The three rules together.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Parses the three values (dive's flag order); every bad value is reported.
    pub fn parse(
        lowest_efficiency: &str,
        highest_wasted_bytes: &str,
        highest_user_wasted_percent: &str,
    ) -> Result<Rules, String> {
        let parsed = [
            Rule::lowest_efficiency(lowest_efficiency),
            Rule::highest_wasted_bytes(highest_wasted_bytes),
            Rule::highest_user_wasted_percent(highest_user_wasted_percent),
        ];
        let errors: Vec<String> = parsed
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Rules(parsed.into_iter().filter_map(Result::ok).collect()))
    }

    pub fn evaluate(&self, a: &Analysis) -> Vec<RuleResult> {
        self.0.iter().map(|r| r.evaluate(a)).collect()
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules(vec![
            Rule::LowestEfficiency(0.9),
            Rule::Disabled(HIGHEST_WASTED_BYTES),
            Rule::HighestUserWastedPercent(0.1),
        ])
    }
}

/// dive's result block: one line per rule, then the tally.
pub fn render_results(results: &[RuleResult]) -> String {
    let mut out = String::from("CI rules:\n");
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for r in results {
        let status = match r.status {
            Status::Pass => {
                pass += 1;
                "PASS"
            }
            Status::Fail => {
                fail += 1;
                "FAIL"
            }
            Status::Skip => {
                skip += 1;
                "SKIP"
            }
        };
        if r.message.is_empty() {
            out.push_str(&format!("  {status}: {}\n", r.rule));
        } else {
            out.push_str(&format!("  {status}: {}: {}\n", r.rule, r.message));
        }
    }
    let verdict = if fail > 0 { "FAIL" } else { "PASS" };
    out.push_str(&format!(
        "Result:{verdict} [Total:{}] [Passed:{pass}] [Failed:{fail}] [Warn:0] [Skipped:{skip}]\n",
        results.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_dive() {
        let rules = Rules::parse("0.9", "disabled", "0.1").unwrap();
        assert_eq!(rules, Rules::default());
        assert_eq!(
            Rules::parse("off", "20MB", "").unwrap().0,
            vec![
                Rule::Disabled(LOWEST_EFFICIENCY),
                Rule::HighestWastedBytes(20_000_000),
                Rule::Disabled(HIGHEST_USER_WASTED_PERCENT)
            ]
        );
        let err = Rules::parse("1.5", "many", "x").unwrap_err();
        assert!(err.contains("outside allowed range"), "{err}");
        assert!(err.contains("highestWastedBytes"), "{err}");
        assert!(err.contains("highestUserWastedPercent"), "{err}");
    }
}
